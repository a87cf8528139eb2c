"""The fold preparation as a Ray task (worker side): train the fold's centre classifier and
compute its CAMs once (or reuse them from the fold cache), log the fold's W&B run, and hand the
artefacts to the driver, which shares them with every trial of the fold."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from trainables.classifier import FoldArtifacts, cached_fold
from trainables.config import TrialConfig
from trainables.data.cache import DecodedData
from trainables.data.source import fold_split
from trainables.engine import Runtime
from trainables.trial import prepare_trial_fold, trial_fold_entry
from trainables.wandb_runs import log_fold_run


def prepare_fold_task(
    data: DecodedData,
    cfg_dict: dict[str, Any],
    cache_root: str,
    granted_gpus: float,
    wandb_settings: dict[str, Any],
) -> tuple[FoldArtifacts, bool]:
    """Returns the fold's artefacts and whether they came from the cache.

    Args:
        data: the decoded dataset (from the object store).
        cfg_dict: the trial config of the fold (its held-out centre, classifier, masking).
        cache_root: the fold cache shared by every sweep on this storage.
        granted_gpus: the GPU share Ray granted this task (0: train on the CPU).
        wandb_settings: the sweep's W&B settings (``sweeps.tracking.wandb_settings``).
    """
    cfg = TrialConfig.model_validate(cfg_dict)
    runtime = Runtime.from_config(cfg.train, granted_gpus=granted_gpus)
    split = fold_split(data, cfg.data, cfg.held_out_centre)
    fold, reused = prepare_trial_fold(cfg, data, split, Path(cache_root), runtime)
    if not reused:
        log_fold_run(wandb_settings, data, split, fold, runtime, masking=cfg.masking)
    return _shareable(fold), reused


def cached_trial_fold(
    data: DecodedData, cfg: TrialConfig, cache_root: Path
) -> FoldArtifacts | None:
    """The fold's artefacts if the cache already holds them whole, loaded where this runs (the
    driver: no Ray task, so no fresh worker process that imports torch for a file read); None
    otherwise, and `prepare_fold_task` trains them (or reports and rebuilds a damaged entry)."""
    split = fold_split(data, cfg.data, cfg.held_out_centre)
    fold = cached_fold(trial_fold_entry(cfg, data, split, cache_root))
    return None if fold is None else _shareable(fold)


def _shareable(fold: FoldArtifacts) -> FoldArtifacts:
    # Materialise the CAMs: the artefact travels through the object store to every trial.
    return dataclasses.replace(fold, cams=np.ascontiguousarray(fold.cams))
