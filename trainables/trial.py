"""One segmentation trial end to end, without Ray: the loop both `camsweep train` and the Tune
trainable run.

Per epoch: train (with CAM masking) → validate → keep the best-validation weights → checkpoint →
report. At the end the best-validation weights are evaluated on the in-distribution and
out-of-distribution test sets, and everything needed to trace a number back to its settings is
written to the trial folder (resolved config, split CSV, per-image metrics, results.json).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from trainables import metric_keys as K
from trainables.checkpoint import load_checkpoint, save_checkpoint
from trainables.classifier import FoldArtifacts, fold_cache_entry, fold_key, prepare_fold
from trainables.config import TrialConfig
from trainables.data.batches import BatchSource
from trainables.data.cache import DecodedData
from trainables.data.source import fold_split, prepare_data
from trainables.data.splits import FoldSplit
from trainables.engine import Masker, Runtime, evaluate, seed_everything, train_one_epoch
from trainables.models import SegmentationNet, build_model
from trainables.run_files import (
    BEST_FILE,
    CONFIG_FILE,
    PER_IMAGE_FILE,
    RESULTS_FILE,
    SPLIT_FILE,
    STATE_FILE,
)

# report(metrics, checkpoint_dir or None) — Tune's `tune.report` in a sweep, a printer in the CLI.
Reporter = Callable[[dict[str, float], Path | None], None]


@dataclass
class TrialResult:
    metrics: dict[str, float]
    history: list[dict[str, float]]
    out_dir: Path
    model: SegmentationNet | None = None  # best-validation weights; None when results were stored


def restore_training_state(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Loads a training-state checkpoint into ``model`` and ``optimizer`` (wherever they live) and
    returns the rest of it (epoch, best scores, history).

    The file is read onto the host on purpose: ``load_state_dict`` moves weights and moments to
    the parameters' device but leaves AdamW's ``step`` counters where they were loaded, and step
    counters on a GPU make every later optimizer step read them back to the host, once per
    parameter — hundreds of stalls per step for the rest of a resumed trial.
    """
    state = load_checkpoint(path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state


def _epoch_seed(cfg: TrialConfig, epoch: int) -> int:
    # Every epoch's randomness derives from (seed, epoch), so a resumed trial continues with the
    # same shuffles, augmentations and masks as an uninterrupted one.
    return (cfg.seed * 1_000_003 + epoch) % 2**31


def _masking_seed(epoch_seed: int) -> int:
    # Its own stream: seeded like the shuffle, the masking draws would be the very numbers that
    # ordered the batch, and which frames get masked would depend on where they were shuffled to.
    return int(np.random.SeedSequence([epoch_seed, 1]).generate_state(1)[0])


def check_split(split: FoldSplit, batch_size: int) -> None:
    """Model selection needs validation frames, and training drops a final incomplete batch
    (a one-image batch breaks BatchNorm in train mode, e.g. DeepLabV3+'s ASPP pooling), so the
    training split must fill one batch; fail before any training otherwise."""
    if not len(split.val) or not len(split.train):
        raise ValueError(
            f"held-out centre C{split.held_out}: empty train or validation split (train "
            f"{len(split.train)}, val {len(split.val)} frames) — the training centres have too "
            "few patients for an 80/10/10 patient split"
        )
    if len(split.train) < batch_size:
        raise ValueError(
            f"held-out centre C{split.held_out}: {len(split.train)} training frames, fewer than "
            f"train.batch_size {batch_size} — no complete batch to train on"
        )


def run_segmentation(
    cfg: TrialConfig,
    data: DecodedData,
    split: FoldSplit,
    fold: FoldArtifacts | None,
    out_dir: Path,
    *,
    report: Reporter | None = None,
    resume_dir: Path | None = None,
    finished_dir: Path | None = None,
    checkpoint_dir: Path | None = None,
    provenance: dict[str, Any] | None = None,
    runtime: Runtime | None = None,
) -> TrialResult:
    """Trains and tests one segmentation model.

    Args:
        cfg: the trial config.
        data: the decoded dataset (shared by every trial).
        split: the fold's split; must match ``cfg.held_out_centre``.
        fold: the fold's classifier and cached CAMs; required when ``cfg.masking.p > 0``.
        out_dir: the trial folder (checkpoints and results go here).
        report: called after every epoch with the metrics and, on checkpoint epochs, the
            checkpoint folder.
        resume_dir: a checkpoint folder written by an earlier run of this trial.
        finished_dir: a folder of this trial's own outside Tune's trial folder (which Tune
            clears when it restores a trial). The finished results are kept there as well, and
            found there on a rerun of this exact config: the driver can die after a trial
            finished but before Tune recorded its final checkpoint, and Tune then restarts it
            from an earlier checkpoint or from scratch.
        checkpoint_dir: where checkpoints are written (default ``out_dir / "checkpoint"``).
        provenance: extra facts recorded in results.json (e.g. the Ray trial and node ids).
        runtime: where to compute (default: from ``cfg.train``; a Ray trial passes the one for
            the resources it was granted).
    """
    if split.held_out != cfg.held_out_centre:
        raise ValueError(f"split is for C{split.held_out}, config for C{cfg.held_out_centre}")
    check_split(split, cfg.train.batch_size)
    if cfg.masking.masks and fold is None:
        raise ValueError(f"masking.p = {cfg.masking.p} needs the fold's CAMs and classifier")
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = checkpoint_dir or out_dir / "checkpoint"
    _write_provenance(cfg, data, split, out_dir)
    found = _finished_results([resume_dir, finished_dir], cfg)
    if found is not None:
        # The trial had finished but the driver died before recording it: hand back the stored
        # results instead of training or evaluating again.
        folder, stored = found
        for name in (RESULTS_FILE, PER_IMAGE_FILE):
            shutil.copyfile(folder / name, out_dir / name)
        if report is not None:
            report(stored["metrics"], None)
        return TrialResult(stored["metrics"], stored["history"], out_dir)
    parts = build_trial(cfg, data, split, fold, runtime or Runtime.from_config(cfg.train))
    progress = Progress()
    if resume_dir is not None:
        progress = restore_progress(resume_dir, ckpt_dir, parts)
    trial_start = time.perf_counter()
    train_epochs(cfg, parts, progress, ckpt_dir, report, resumed=resume_dir is not None)
    final = finalise(cfg, parts, progress, ckpt_dir, out_dir, time.perf_counter() - trial_start)
    results = {
        "config": cfg.to_dict(),
        "metrics": final,
        "history": progress.history,
        "dataset_hash": data.dataset_hash,
        "fold": None if fold is None else {"key": fold.key, "classifier": fold.metrics},
        "provenance": provenance or {},
    }
    # Written whole or not at all: its presence is what marks the trial finished.
    tmp = out_dir / f".{RESULTS_FILE}.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, out_dir / RESULTS_FILE)
    # The final checkpoint and finished_dir carry the results, so a resumed sweep never re-runs
    # a finished trial (results.json last: its presence marks the copy complete).
    for folder in (ckpt_dir, finished_dir):
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            for name in (PER_IMAGE_FILE, RESULTS_FILE):
                shutil.copyfile(out_dir / name, folder / f".{name}.tmp")
                os.replace(folder / f".{name}.tmp", folder / name)
    if report is not None:
        report(final, ckpt_dir)
    return TrialResult(final, progress.history, out_dir, parts.model)


@dataclass
class TrialParts:
    """What a trial trains with, built once: model, optimiser, masking and batches."""

    model: SegmentationNet
    optimizer: torch.optim.Optimizer
    masker: Masker | None  # None for the baseline (p = 0)
    batches: BatchSource
    eval_sets: dict[str, Any]  # split name → its evaluation batches (non-empty splits only)
    runtime: Runtime


@dataclass
class Progress:
    """Where training stands; restored from a checkpoint on resume."""

    next_epoch: int = 1
    best_dice: float = -1.0
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def build_trial(
    cfg: TrialConfig, data: DecodedData, split: FoldSplit, fold: FoldArtifacts | None, runtime
) -> TrialParts:
    """Seeds, builds the model and optimiser, the masking (cached or online CAMs) and the
    batch source of this fold."""
    seed_everything(cfg.seed)
    model = runtime.prepare_model(
        build_model(
            cfg.model.arch,
            variant=cfg.model.variant,
            encoder_name=cfg.model.encoder_name,
            encoder_weights=cfg.model.encoder_weights,
        )
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay
    )
    cams, masker = None, None
    if cfg.masking.masks:
        if not np.array_equal(fold.train_indices, split.train):
            raise ValueError("fold artefacts were computed for a different training split")
        online = cfg.masking.cam_mode == "online"
        classifier = runtime.prepare_model(fold.load_classifier()) if online else None
        cams = None if online else fold.cams
        masker = Masker(
            cfg.masking, generator=torch.Generator(runtime.device), classifier=classifier
        )
    labels = split.centre_labels(data.centres)
    batches = BatchSource(cfg.train, data, split, labels, cams, runtime.device)
    eval_sets = {name: batches.eval(name) for name in K.SPLITS if len(split.indices(name))}
    return TrialParts(model, optimizer, masker, batches, eval_sets, runtime)


def restore_progress(resume_dir: Path, ckpt_dir: Path, parts: TrialParts) -> Progress:
    """Loads the checkpoint's weights and optimiser state into ``parts``; carries its best
    weights over to the new checkpoint folder."""
    state = restore_training_state(resume_dir / STATE_FILE, parts.model, parts.optimizer)
    if (resume_dir / BEST_FILE).exists() and resume_dir != ckpt_dir:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        (ckpt_dir / BEST_FILE).write_bytes((resume_dir / BEST_FILE).read_bytes())
    return Progress(state["epoch"] + 1, state["best_dice"], state["best_epoch"], state["history"])


def train_epochs(
    cfg: TrialConfig,
    parts: TrialParts,
    progress: Progress,
    ckpt_dir: Path,
    report: Reporter | None,
    *,
    resumed: bool,
) -> None:
    """The epoch loop: train → validate → keep the best weights → checkpoint → report (every
    epoch but the last, whose report carries the test results)."""
    model, masker = parts.model, parts.masker
    for epoch in range(progress.next_epoch, cfg.train.epochs + 1):
        seed = _epoch_seed(cfg, epoch)
        train_loader = parts.batches.train(seed)
        if masker is not None:
            masker.generator.manual_seed(_masking_seed(seed))
        _inject_fault(cfg, epoch, model, resumed=resumed)
        stats = train_one_epoch(model, train_loader, parts.optimizer, parts.runtime, masker=masker)
        val = evaluate(model, parts.eval_sets["val"], parts.runtime)
        metrics = {
            K.EPOCH: epoch,
            K.TRAIN_LOSS: stats.loss,
            K.TRAIN_MASKED_FRACTION: stats.masked_fraction,
            K.TRAIN_MASKED_PIXELS: stats.masked_pixels,
            K.TRAIN_IMAGES_PER_S: stats.images / max(stats.seconds, 1e-9),
            K.TRAIN_EPOCH_SECONDS: stats.seconds,
            K.VAL_LOSS: val.loss,
            **{K.train_part_key(k): v for k, v in stats.parts.items()},
            **K.split_metrics("val", val.mean),
        }
        improved = val.mean["dice"] > progress.best_dice
        if improved:
            progress.best_dice, progress.best_epoch = val.mean["dice"], epoch
            save_checkpoint(ckpt_dir / BEST_FILE, {"model": model.state_dict(), "epoch": epoch})
        metrics[K.BEST_VAL_DICE], metrics[K.BEST_EPOCH] = progress.best_dice, progress.best_epoch
        progress.history.append(metrics)
        progress.next_epoch = epoch + 1
        last = epoch == cfg.train.epochs
        checkpointed = improved or last or epoch % cfg.train.checkpoint_every == 0
        if checkpointed:
            save_checkpoint(
                ckpt_dir / STATE_FILE,
                {
                    "model": model.state_dict(),
                    "optimizer": parts.optimizer.state_dict(),
                    "epoch": epoch,
                    "best_dice": progress.best_dice,
                    "best_epoch": progress.best_epoch,
                    "history": progress.history,
                },
            )
        if report is not None and not last:
            report(metrics, ckpt_dir if checkpointed else None)


def finalise(
    cfg: TrialConfig,
    parts: TrialParts,
    progress: Progress,
    ckpt_dir: Path,
    out_dir: Path,
    seconds: float,
) -> dict[str, float]:
    """The trial's final metrics: the last epoch's training figures, then every split's metrics
    from the *best* checkpoint (the last epoch's val/* would otherwise sit next to test scores
    of another checkpoint)."""
    final = {**(progress.history[-1] if progress.history else {})}
    final.update(_test_best(parts.model, ckpt_dir, parts.eval_sets, parts.runtime, out_dir))
    final.update({K.BEST_VAL_DICE: progress.best_dice, K.BEST_EPOCH: progress.best_epoch})
    final[K.TRIAL_SECONDS] = seconds
    return final


class InjectedFault(RuntimeError):
    """The error ``fault.raise_at_epoch`` raises."""


def _inject_fault(cfg: TrialConfig, epoch: int, model, resumed: bool) -> None:
    """Test-only faults (``cfg.fault``); does nothing unless a fault epoch is set. ``once``:
    only on a fresh start, so a retry that resumes from a checkpoint gets past it."""
    fault = cfg.fault
    if epoch not in (fault.raise_at_epoch, fault.nan_at_epoch) or (fault.once and resumed):
        return
    if fault.seeds is not None and cfg.seed not in fault.seeds:
        return
    if epoch == fault.raise_at_epoch:
        raise InjectedFault(f"injected fault at epoch {epoch}")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))


def _finished_results(
    folders: list[Path | None], cfg: TrialConfig
) -> tuple[Path, dict[str, Any]] | None:
    """Where a trial's results already are, if it had finished with this exact config: the
    checkpoint resumed from (the final checkpoint carries them), or the trial's finished_dir."""
    for folder in folders:
        if folder is None:
            continue
        try:
            stored = json.loads((folder / RESULTS_FILE).read_text())
        except (OSError, ValueError):
            continue
        if stored.get("config") == cfg.to_dict() and (folder / PER_IMAGE_FILE).exists():
            return folder, stored
    return None


def _test_best(
    model, ckpt_dir: Path, eval_sets, runtime: Runtime, out_dir: Path
) -> dict[str, float]:
    """Evaluates the best-validation weights on every split; saves the per-image arrays."""
    best = load_checkpoint(ckpt_dir / BEST_FILE, runtime.device)
    model.load_state_dict(best["model"])
    metrics: dict[str, float] = {}
    arrays: dict[str, np.ndarray] = {}
    for name, loader in eval_sets.items():
        result = evaluate(model, loader, runtime)
        metrics.update(K.split_metrics(name, result.mean))
        metrics.update({f"{k}_pooled": v for k, v in K.split_metrics(name, result.pooled).items()})
        arrays[f"{name}/index"] = result.indices
        arrays.update({f"{name}/{m}": v for m, v in result.per_image.items()})
    np.savez(out_dir / PER_IMAGE_FILE, **arrays)
    return metrics


def _write_provenance(cfg: TrialConfig, data: DecodedData, split: FoldSplit, out_dir: Path) -> None:
    (out_dir / CONFIG_FILE).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    split.to_csv(out_dir / SPLIT_FILE, data.names, data.centres, data.patients)


def prepare_trial_inputs(
    cfg: TrialConfig, fold_cache: Path, *, with_fold: bool = False
) -> tuple[DecodedData, FoldSplit, FoldArtifacts | None, bool]:
    """Data, split and (when masking needs it, or ``with_fold``) the fold's artefacts.

    Returns:
        data, split, fold artefacts (None for the baseline) and whether they came from the cache.
    """
    _, data = prepare_data(cfg.data, held_out=[cfg.held_out_centre])
    split = fold_split(data, cfg.data, cfg.held_out_centre)
    check_split(split, cfg.train.batch_size)
    if not (with_fold or cfg.masking.masks):
        return data, split, None, False
    fold, reused = prepare_trial_fold(cfg, data, split, fold_cache)
    return data, split, fold, reused


def prepare_trial_fold(
    cfg: TrialConfig,
    data: DecodedData,
    split: FoldSplit,
    cache_root: Path,
    runtime: Runtime | None = None,
) -> tuple[FoldArtifacts, bool]:
    """The fold artefacts this trial config asks for (classifier config, CAM target), computed
    with ``runtime`` (default: from ``cfg.train``)."""
    return prepare_fold(
        data,
        split,
        cfg.classifier,
        runtime or Runtime.from_config(cfg.train),
        cache_root,
        cam=cfg.masking.cam,
        augment=cfg.train.augment,
    )


def trial_fold_entry(
    cfg: TrialConfig, data: DecodedData, split: FoldSplit, cache_root: Path
) -> Path:
    """The fold cache's entry of the artefacts `prepare_trial_fold` gives this trial config."""
    key = fold_key(data, split, cfg.classifier, cfg.masking.cam, cfg.train.augment)
    return fold_cache_entry(cache_root, split.held_out, key)
