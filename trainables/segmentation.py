"""The Tune trainable of one segmentation trial (worker side), and its W&B run.

Tune hands it the trial's axis values (``config``: arch, held_out_centre, p, …); the sweep's shared
settings, the decoded dataset and the per-fold artefacts come through ``tune.with_parameters``,
so they sit in the object store once and every trial on a node reads them without copying.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray import tune

from trainables import metric_keys as K
from trainables.checkpoint import first_loadable
from trainables.config import TrialConfig, with_axis_values
from trainables.data.cache import DecodedData
from trainables.data.source import fold_split
from trainables.engine import Runtime
from trainables.examples import PANELS, example_strips
from trainables.run_files import BEST_FILE, PER_IMAGE_FILE, STATE_FILE
from trainables.storage_fault import storage_errno, trial_fault
from trainables.trial import InjectedFault, run_segmentation
from trainables.wandb_runs import TrialLogger, wandb_run_id

log = logging.getLogger("camsweep.trial")
EXAMPLES_PER_SPLIT = 3


def train_segmentation(
    config: dict[str, Any],
    *,
    base: dict[str, Any],
    axes: dict[str, str],
    data: DecodedData,
    folds: dict[int, Any],
    wandb_settings: dict[str, Any] | None = None,
    finished_root: str | None = None,
    run_path: str = "",
) -> None:
    """Runs one trial: resumes from Tune's checkpoint if any, reports every epoch.
    ``finished_root``: where each finished trial's results are also kept, outside Tune's trial
    folders (see ``run_segmentation``'s ``finished_dir``); None on remote storage. ``run_path``:
    the run folder on the results storage (local path or URI), for messages."""
    context = tune.get_context()
    resources = context.get_trial_resources().required_resources
    cfg = with_axis_values(base, axes, config)
    runtime = Runtime.from_config(cfg.train, granted_gpus=resources.get("GPU", 0))
    sweep = (wandb_settings or {}).get("group", "camsweep")
    tracker = TrialLogger(wandb_settings, wandb_run_id(sweep, context.get_trial_id()), cfg)
    torch.set_num_threads(max(1, int(resources.get("CPU", 1))))
    split = fold_split(data, cfg.data, cfg.held_out_centre)
    fold = None
    if cfg.masking.masks:
        ref = folds.get(cfg.held_out_centre)
        if ref is None:
            raise RuntimeError(f"no fold artefacts were prepared for C{cfg.held_out_centre}")
        fold = ray.get(ref)
    trial_dir = trial_files_dir(context)
    # Checkpoints are written outside the trial folder: Tune copies each reported one to storage
    # itself, and artefacts in the trial folder are synced too — twice would waste space. The
    # folder is named by the trial, not at random: an attempt killed before its `finally` (a lost
    # node, a killed driver) leaves it behind, and the trial's next attempt here clears it.
    work = Path(tempfile.gettempdir()) / f"camsweep-ckpt-{context.get_trial_id()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        resume_dir = _resume_dir(tune.get_checkpoint(), work)

        reported = [0]  # the last epoch whose report reached Tune

        def report(metrics: dict[str, float], ckpt_dir: Path | None) -> None:
            tracker.log(metrics)
            ckpt = tune.Checkpoint.from_directory(str(ckpt_dir)) if ckpt_dir else None
            tune.report(metrics, checkpoint=ckpt)
            reported[0] = int(metrics.get(K.EPOCH, reported[0]))

        try:
            result = run_segmentation(
                cfg,
                data,
                split,
                fold,
                trial_dir,
                report=report,
                resume_dir=resume_dir,
                finished_dir=None
                if finished_root is None
                else Path(finished_root) / context.get_trial_id(),
                checkpoint_dir=work / "checkpoint",
                runtime=runtime,
                provenance={
                    "trial_id": context.get_trial_id(),
                    "ray_node_id": ray.get_runtime_context().get_node_id(),
                    "resources": {k: resources[k] for k in ("CPU", "GPU") if k in resources},
                },
            )
        except InjectedFault:
            if cfg.fault.corrupt_checkpoint:
                _truncate(tune.get_checkpoint())
            raise
        except torch.OutOfMemoryError as exc:
            raise with_packing_advice(exc, cfg, resources.get("GPU", 0)) from exc
        except OSError as exc:
            if storage_errno(exc) is None:
                raise
            # Tune's checkpoint copy (or our results) could not be written: say so in one line.
            raise trial_fault(exc, run_path or trial_dir, reported[0]) from exc
        if tracker.run is not None and result.model is not None:
            tracker.log_final(
                result.metrics,
                _examples(cfg, result.model, data, split, fold, runtime),
                _per_image_table(trial_dir, data),
                list(PANELS),
            )
    finally:
        tracker.finish()
        shutil.rmtree(work, ignore_errors=True)


def trial_files_dir(context) -> Path:
    """Where a trial writes its files: Tune's working directory of the trial, which Tune makes
    the process's working directory and persists to the trial's storage folder
    (``SyncConfig(sync_artifacts=True)``) from whichever node runs it, reused process or not.
    ``get_trial_dir()`` names the driver's staging folder when a process starts (a path on the
    driver's machine: a trial on another node would write to its own disk, never synced) and
    the working directory after Tune reuses the process for another trial."""
    if os.environ.get("RAY_CHDIR_TO_TRIAL_DIR", "1") == "0":
        return Path(context.get_trial_dir())
    return Path.cwd()


def with_packing_advice(
    exc: torch.OutOfMemoryError, cfg: TrialConfig, gpus: float
) -> torch.OutOfMemoryError:
    """The OOM error, with the setting that frees memory as its last line (the line `camsweep
    status` and `export` show): packed trials share a GPU, so the fix is usually a larger share."""
    arch = cfg.model.arch
    advice = (
        f"GPU out of memory: {arch} at batch {cfg.train.batch_size} on a {gpus:g}-GPU share — "
        f"give it a larger share (resources.per_arch.{arch}.gpu: {min(1.0, 2 * gpus):g}, so "
        "fewer trials share a GPU) or lower train.batch_size"
    )
    return torch.OutOfMemoryError(f"{exc}\n{advice}")


def _truncate(checkpoint) -> None:
    """Test-only fault: cut the stored copy of the trial's newest checkpoint in half (local
    storage), so the retry must detect it and fall back to the previous one."""
    state = Path(checkpoint.path) / STATE_FILE if checkpoint is not None else None
    if state is not None and state.exists():
        with state.open("r+b") as fh:
            fh.truncate(state.stat().st_size // 2)
        log.warning("fault injection: truncated %s", state)


def _resume_dir(checkpoint, work: Path) -> Path | None:
    """Tune's latest checkpoint, or — when it does not load (a crash mid-write on a flaky
    filesystem, a truncated copy) — the newest earlier one of the same trial."""
    if checkpoint is None:
        return None
    latest = Path(checkpoint.to_directory(str(work / "resume")))
    candidates = [latest]
    stored = Path(checkpoint.path)
    if stored.parent.is_dir():  # local or mounted storage: the trial's other checkpoints
        candidates += sorted(
            (p for p in stored.parent.glob("checkpoint_*") if p.name < stored.name), reverse=True
        )
    chosen = first_loadable(candidates, (STATE_FILE, BEST_FILE))
    if chosen is None:
        log.warning("no loadable checkpoint among %s: starting this trial afresh", candidates)
    elif chosen != latest:
        log.warning("latest checkpoint %s is corrupted: resuming from %s", stored, chosen)
    return chosen


def _examples(
    cfg: TrialConfig, model, data: DecodedData, split, fold, runtime: Runtime
) -> list[tuple[str, Any]]:
    out = []
    for name in ("val", "test_out"):
        rows = split.indices(name)[:EXAMPLES_PER_SPLIT]
        if len(rows):
            strips = example_strips(cfg, model, data, rows, runtime, fold)
            out += [(f"{name} {data.names[i]}", s) for i, s in zip(rows, strips)]
    return out


def _per_image_table(trial_dir: Path, data: DecodedData) -> tuple[list[str], list[list]]:
    arrays = np.load(trial_dir / PER_IMAGE_FILE)
    metrics = ["dice", "iou", "recall", "precision", "accuracy"]
    columns = ["split", "image", "centre", *metrics]
    rows = []
    for split in ("val", "test_in", "test_out"):
        if f"{split}/index" not in arrays:
            continue
        for k, i in enumerate(arrays[f"{split}/index"]):
            rows.append(
                [split, data.names[i], int(data.centres[i])]
                + [float(arrays[f"{split}/{m}"][k]) for m in metrics]
            )
    return columns, rows
