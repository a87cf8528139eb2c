"""The Tune trainable of one segmentation trial (worker side).

Tune hands it the trial's axis values (``config``: arch, held_out_centre, p, …); the sweep's shared
settings, the decoded dataset and the per-fold artefacts come through ``tune.with_parameters``,
so they sit in the object store once and every trial on a node reads them without copying.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from trainables.config import TrialConfig, set_by_path
from trainables.data.cache import DecodedData
from trainables.data.splits import leave_one_centre_out
from trainables.trial import needs_fold, run_segmentation


def resolve_trial_config(base: dict[str, Any], axes: dict[str, str], config: dict[str, Any]):
    """Applies the trial's axis values (axis name → value) to the sweep's base trial config."""
    raw = _deep_copy(base)
    for name, value in config.items():
        if name in axes:
            set_by_path(raw, axes[name], value)
    return TrialConfig.model_validate(raw)


def _deep_copy(tree: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in tree.items()}


def train_segmentation(
    config: dict[str, Any],
    *,
    base: dict[str, Any],
    axes: dict[str, str],
    data: DecodedData,
    folds: dict[int, Any],
) -> None:
    """Runs one trial: resumes from Tune's checkpoint if any, reports every epoch."""
    cfg = resolve_trial_config(base, axes, config)
    cpus = int(tune.get_context().get_trial_resources().required_resources.get("CPU", 1))
    torch.set_num_threads(max(1, cpus))
    split = leave_one_centre_out(
        data.centres, data.patients, cfg.held_out_centre, seed=cfg.data.split_seed
    )
    fold = None
    if needs_fold(cfg):
        ref = folds.get(cfg.held_out_centre)
        if ref is None:
            raise RuntimeError(f"no fold artefacts were prepared for C{cfg.held_out_centre}")
        fold = ray.get(ref)
    trial_dir = Path(tune.get_context().get_trial_dir())
    # Checkpoints are written outside the trial folder: Tune copies each reported one to storage
    # itself, and artefacts in the trial folder are synced too — twice would waste space.
    work = Path(tempfile.mkdtemp(prefix="camsweep-ckpt-"))
    try:
        resume_dir = None
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            resume_dir = Path(checkpoint.to_directory(str(work / "resume")))

        def report(metrics: dict[str, float], ckpt_dir: Path | None) -> None:
            ckpt = tune.Checkpoint.from_directory(str(ckpt_dir)) if ckpt_dir else None
            tune.report(metrics, checkpoint=ckpt)

        run_segmentation(
            cfg,
            data,
            split,
            fold,
            trial_dir,
            report=report,
            resume_dir=resume_dir,
            checkpoint_dir=work / "checkpoint",
            provenance={
                "trial_id": tune.get_context().get_trial_id(),
                "ray_node_id": ray.get_runtime_context().get_node_id(),
            },
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
