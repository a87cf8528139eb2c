"""Method effect: a reduced synthetic Table 1 run as a real camsweep sweep — every held-out
centre, UNet, p ∈ {0, 0.5}, several seeds — and per fold the out-of-distribution Dice of both
arms, their difference and its paired bootstrap 95 % CI (the table `camsweep export` computes).

    python -m benchmarks.method_effect [--image-size N] [--epochs N] [--seeds N]
        [--per-centre N | --scale F] [--classifier-epochs N] [--out DIR]

CPU defaults (64 px, tiny UNet) were sized from a one-trial timing to about 12 minutes on 2
idle cores (26 minutes measured on 2 cores shared with other jobs); with CUDA the default image
size is 256 px, the paper's. Nothing here is chosen to make masking win: the settings are the
demo's recipe (tiny models, lr 1e-3, threshold 0.5, occlusion) on all six folds, except that the
centre classifier trains until it tells the centres apart (the demo's 4 epochs leave it at chance).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import REPO, emit
from sweeps.allocation import allocated_cpus, allocated_gpus
from sweeps.results import RunData, collect_run
from sweeps.selection import Selection, group_settings, swept_names
from sweeps.spec import load_spec
from sweeps.stats import BootstrapCI
from sweeps.tables import TableRow, table_rows
from trainables import metric_keys as K
from trainables.run_files import RESULTS_FILE

CENTRES = [1, 2, 3, 4, 5, 6]
P_MASKED = 0.5
OOD_DICE = K.split_key("test_out", "dice")


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.method_effect", description=__doc__)
    parser.add_argument(
        "--image-size", type=int, default=None, help="default: 256 with CUDA, else 64"
    )
    parser.add_argument("--epochs", type=int, default=12, help="segmentation epochs per trial")
    parser.add_argument(
        "--classifier-epochs",
        type=int,
        default=16,
        help="at 64 px, 8 left C3's classifier at chance",
    )
    parser.add_argument(
        "--cam-layer",
        default="layer2",
        help="masking.cam_layer: the demo's layer2 localises the overlays at 64 px, layer4 does "
        "not (README, 'The demo's CAMs')",
    )
    parser.add_argument("--seeds", type=int, default=3, help="trial seeds 0..N-1 per arm")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--per-centre", type=int, default=None, help="frames per centre (default 30)")
    size.add_argument("--scale", type=float, default=None, help="fraction of PolypGen's sizes")
    parser.add_argument("--variant", default="tiny", help="model.variant of the UNet")
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench-data" / "method-effect", help="storage folder"
    )
    args = parser.parse_args(argv)
    if args.image_size is None:
        args.image_size = 256 if cuda() else 64
    if args.per_centre is None and args.scale is None:
        args.per_centre = 30
    return args


def synthetic_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The generated dataset: the demo tree's frame size and seed, at the chosen size."""
    amount = {"per_centre": args.per_centre} if args.per_centre else {"scale": args.scale}
    return {**amount, "size": "320x256", "seed": 0}


def sweep_spec(args: argparse.Namespace, *, gpus: int) -> dict[str, Any]:
    """The sweep, as a spec YAML would give it (cf. sweeps/demo.yaml)."""
    out = Path(args.out).resolve()
    return {
        "name": "method-effect",
        "data": {
            "source": "synthetic",
            # Under the storage folder: reruns reuse the generated frames and their decoded cache.
            "root": str(out / "data"),
            "cache_dir": str(out / "cache"),
            "image_size": args.image_size,
            "synthetic": synthetic_settings(args),
        },
        "model": {"variant": args.variant},
        "classifier": {"arch": "resnet18", "epochs": args.classifier_epochs, "lr": 1.0e-3},
        "masking": {"threshold": 0.5, "mode": "occlude", "cam_layer": args.cam_layer},
        "train": {
            "epochs": args.epochs,
            "batch_size": 4,
            "lr": 1.0e-3,
            "checkpoint_every": args.epochs,  # only the resume point at the end: less disk time
        },
        "space": {
            "arch": {"grid": ["unet"]},
            "held_out_centre": {"grid": CENTRES},
            "p": {"grid": [0.0, P_MASKED]},
            "seed": {"grid": list(range(args.seeds))},
        },
        "search": {"algorithm": "grid", "num_samples": 1, "seed": 0},
        "scheduler": {"name": "fifo"},  # every trial runs all its epochs: no early stopping
        # Two trials per GPU, as sweeps/paper-table1.yaml packs them.
        "resources": {"cpu": 1, "gpu": 0.5 if gpus else 0},
        "tracking": {"wandb": {"mode": "disabled"}},
        "storage": {"path": str(out)},
        "checkpoints_to_keep": 1,  # ~90 MB each: the resume point is all this run needs
        "ray": {"num_cpus": allocated_cpus(), "object_store_mb": 256},
    }


def run(args: argparse.Namespace) -> Path:
    """Runs the sweep to completion; its run folder."""
    from sweeps.launch import run_sweep  # Ray only when a sweep runs, not for the table's tests

    gpus = allocated_gpus()
    spec = load_spec(
        "benchmarks/method_effect.py", raw=sweep_spec(args, gpus=gpus), local_gpus=gpus
    )
    return run_sweep(spec)


@dataclass(frozen=True)
class FoldEffect:
    """One held-out centre: both arms' seed-mean OOD Dice and the CI of their difference."""

    centre: int
    dice_p0: float
    dice_masked: float
    ci: BootstrapCI | None
    classifier: dict[str, float]  # the fold's centre classifier: train/val accuracy

    @property
    def difference(self) -> float:
        return self.dice_masked - self.dice_p0


def classifier_metrics(run: RunData) -> dict[int, dict[str, float]]:
    """Per held-out centre, the metrics of the classifier its masked trials shared."""
    out: dict[int, dict[str, float]] = {}
    for trial in run.trials:
        fold = json.loads((trial.record.path / RESULTS_FILE).read_text()).get("fold")
        if fold is not None:
            out[trial.held_out] = fold["classifier"]
    return out


def fold_effects(rows: Sequence[TableRow], classifier: dict[int, dict]) -> list[FoldEffect]:
    """The benchmark's view of `camsweep export`'s table rows (one per held-out centre)."""

    def dice(setting) -> float:
        return setting.mean(OOD_DICE) if setting is not None else math.nan

    return [
        FoldEffect(
            r.held_out, dice(r.baseline), dice(r.augmented), r.ci, classifier.get(r.held_out, {})
        )
        for r in rows
    ]


def effects(run_dir: Path) -> list[FoldEffect]:
    """Reads the run folder as `camsweep export` does and builds its per-fold rows. Each fold
    has one setting per arm, so the selection rule picks nothing: it is only required."""
    run = collect_run(run_dir)
    settings = group_settings(run.trials, swept_names(run.spec))
    rows = table_rows(settings, Selection.make(), spec=run.spec)
    return fold_effects(rows, classifier_metrics(run))


def _accuracy(metrics: dict[str, float]) -> str:
    if "train_accuracy" not in metrics:
        return "–"
    return f"{metrics['train_accuracy']:.2f} / {metrics.get('val_accuracy', math.nan):.2f}"


def markdown_table(folds: Sequence[FoldEffect]) -> list[str]:
    """centre · Dice p = 0 · Dice p = 0.5 · difference · 95 % CI, then the mean over folds."""
    lines = [
        f"| held-out | OOD frames | Dice p=0 | Dice p={P_MASKED} | difference | 95 % CI "
        "| classifier acc. train / val |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in folds:
        ci = f"[{f.ci.low:+.4f}, {f.ci.high:+.4f}]" if f.ci else "–"
        frames = str(f.ci.n_images) if f.ci else "–"
        lines.append(
            f"| C{f.centre} | {frames} | {f.dice_p0:.4f} | {f.dice_masked:.4f} "
            f"| {f.difference:+.4f} | {ci} | {_accuracy(f.classifier)} |"
        )
    above, below = _ci_signs(folds)
    lines.append(
        f"| mean over folds | | {np.mean([f.dice_p0 for f in folds]):.4f} "
        f"| {np.mean([f.dice_masked for f in folds]):.4f} "
        f"| {np.mean([f.difference for f in folds]):+.4f} "
        f"| {above} CI above 0, {below} below | |"
    )
    return lines


def _ci_signs(folds: Sequence[FoldEffect]) -> tuple[int, int]:
    """Folds whose CI lies wholly above 0, and wholly below it."""
    cis = [f.ci for f in folds if f.ci is not None]
    return sum(ci.low > 0 for ci in cis), sum(ci.high < 0 for ci in cis)


def emit_figures(folds: Sequence[FoldEffect], extra: dict[str, Any]) -> None:
    for f in folds:
        where = {"held_out": f.centre, **extra}
        emit(f"method_effect.C{f.centre}.dice_p0", f.dice_p0, "dice", **where)
        emit(f"method_effect.C{f.centre}.dice_p{P_MASKED}", f.dice_masked, "dice", **where)
        ci = {"ci_low": f.ci.low, "ci_high": f.ci.high, "ci": f.ci.method()} if f.ci else {}
        emit(f"method_effect.C{f.centre}.difference", f.difference, "dice", **ci, **where)
        for key in ("train_accuracy", "val_accuracy"):
            if key in f.classifier:
                emit(
                    f"method_effect.C{f.centre}.classifier_{key}",
                    f.classifier[key],
                    "fraction",
                    **where,
                )
    above, below = _ci_signs(folds)
    emit(
        "method_effect.mean_difference",
        float(np.mean([f.difference for f in folds])),
        "dice",
        folds_ci_above_0=above,
        folds_ci_below_0=below,
        **extra,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.time()
    run_dir = run(args)
    wall = time.time() - start
    folds = effects(run_dir)
    print(f"\nrun folder: {run_dir}\n")
    print("\n".join(markdown_table(folds)))
    methods = {f.ci.method() for f in folds if f.ci}
    print("\nCI: " + "; ".join(sorted(methods)) + f"\nwall: {wall:.0f} s\n")
    extra = {
        "image_size": args.image_size,
        "epochs": args.epochs,
        "classifier_epochs": args.classifier_epochs,
        "cam_layer": args.cam_layer,
        "seeds": args.seeds,
        "data": synthetic_settings(args),
        "variant": args.variant,
    }
    emit_figures(folds, extra)
    emit("method_effect.wall", wall, "s", trials=len(CENTRES) * 2 * args.seeds, **extra)
    import ray

    ray.shutdown()


if __name__ == "__main__":
    main()
