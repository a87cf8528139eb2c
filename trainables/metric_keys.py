"""Names of every reported metric — the one place they are spelled.

Trials report them (to Tune, W&B and results.json); status, export and dashboards read them.
"""

from __future__ import annotations

# Per-image segmentation metrics (trainables.metrics computes them), in report order.
METRIC_NAMES = ("dice", "recall", "accuracy", "iou", "precision")
EPOCH = "epoch"
TRAIN_LOSS = "train/loss"
TRAIN_MASKED_FRACTION = "train/masked_fraction"  # share of samples selected for masking (≈ p)
TRAIN_MASKED_PIXELS = "train/masked_pixels"  # share of all training pixels actually occluded
TRAIN_IMAGES_PER_S = "train/images_per_s"
TRAIN_EPOCH_SECONDS = "time/train_epoch_s"  # the training steps of one epoch (no validation)
VAL_LOSS = "val/loss"
VAL_DICE = "val/dice"
BEST_VAL_DICE = "best/val_dice"
BEST_EPOCH = "best/epoch"
TRIAL_SECONDS = "time/trial_s"
SPLITS = ("val", "test_in", "test_out")


def split_key(split: str, metric: str) -> str:
    """e.g. ``split_key("test_out", "dice") == "test_out/dice"``."""
    if split not in SPLITS or metric not in METRIC_NAMES:
        raise ValueError(f"unknown split/metric {split}/{metric}")
    return f"{split}/{metric}"


def train_part_key(part: str) -> str:
    return f"train/{part}_loss"


def split_metrics(split: str, values: dict[str, float]) -> dict[str, float]:
    return {split_key(split, k): float(v) for k, v in values.items() if k in METRIC_NAMES}
