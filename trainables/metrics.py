"""Binary polyp segmentation metrics: Dice, recall, accuracy, IoU and precision.

Predicted probabilities are thresholded with ``probs > 0.5`` (strictly greater, as
torchmetrics does): a pixel at exactly 0.5 is background, which is also what the argmax of a
two-class softmax with a tie gives.

Zero-denominator convention, applied uniformly: a ratio with nothing to count (0 / 0) is 1.
So an image whose prediction and target are both empty scores 1 on every metric; an empty
target with a non-empty prediction has recall 1 (nothing to find) and Dice = IoU = precision = 0;
a non-empty target with an empty prediction has precision 1 (nothing falsely claimed) and
Dice = IoU = recall = 0. Accuracy never has a zero denominator.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

PROB_THRESHOLD = 0.5


def confusion_counts(probs: Tensor, target: Tensor) -> Tensor:
    """Per-image pixel counts of true/false positives/negatives.

    Args:
        probs: (B, ...) foreground probabilities; a pixel is predicted foreground when
            ``probs > 0.5``.
        target: (B, ...) binary ground truth of the same shape (bool, or {0, 1} numbers).

    Returns:
        (B, 4) int64 tensor on the input's device, columns ``TP, FP, FN, TN``.
    """
    if probs.shape != target.shape:
        raise ValueError(
            f"probs and target shapes differ: {tuple(probs.shape)} vs {tuple(target.shape)}"
        )
    if probs.ndim < 2:
        raise ValueError(f"expected a batch of images (B, ...), got shape {tuple(probs.shape)}")
    pred = (probs > PROB_THRESHOLD).flatten(1)
    truth = (target > 0.5).flatten(1)
    tp = (pred & truth).sum(dim=1)
    fp = (pred & ~truth).sum(dim=1)
    fn = (~pred & truth).sum(dim=1)
    tn = pred.shape[1] - tp - fp - fn
    return torch.stack([tp, fp, fn, tn], dim=1)


def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return torch.where(denominator > 0, numerator / safe, torch.ones_like(numerator))


def metrics_from_counts(counts: Tensor, dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """Metrics from (N, 4) ``TP, FP, FN, TN`` counts, with the module's 0/0 = 1 convention.

    Returns:
        A dict keyed by ``METRIC_NAMES`` of (N,) tensors of ``dtype``.
    """
    tp, fp, fn, tn = counts.to(dtype).unbind(dim=1)
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "recall": _ratio(tp, tp + fn),
        "accuracy": (tp + tn) / (tp + fp + fn + tn),
        "iou": _ratio(tp, tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
    }


def per_image_metrics(probs: Tensor, target: Tensor) -> dict[str, Tensor]:
    """Per-image Dice, recall, pixel accuracy, IoU and precision.

    Args:
        probs: (B, 1, H, W) foreground probabilities, thresholded at ``> 0.5``.
        target: (B, 1, H, W) binary ground truth.

    Returns:
        A dict keyed by ``METRIC_NAMES`` of (B,) float32 tensors on the input's device. Empty
        masks follow the module's convention: a 0 / 0 ratio is 1 (see the module docstring).
    """
    return metrics_from_counts(confusion_counts(probs, target))


class MetricAccumulator:
    """Accumulates metrics over batches: per image, their mean, and pooled over the dataset.

    ``update`` only reduces each batch to per-image counts on its device (no host sync); the
    counts are brought to the CPU when results are requested. Pooled metrics sum TP/FP/FN/TN over
    all images before dividing, so large polyps weigh more than in the mean over images.
    """

    def __init__(self) -> None:
        self._counts: list[Tensor] = []

    def update(self, probs: Tensor, target: Tensor) -> None:
        """Add a batch of (B, 1, H, W) probabilities and binary targets."""
        self._counts.append(confusion_counts(probs, target))

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._counts.clear()

    def __len__(self) -> int:
        return sum(c.shape[0] for c in self._counts)

    def _all_counts(self) -> Tensor:
        if not self._counts:
            return torch.zeros((0, 4), dtype=torch.int64)
        # Batches may come from different devices; results are gathered on the CPU.
        counts = torch.cat([c.cpu() for c in self._counts])
        self._counts = [counts]
        return counts

    def per_image(self) -> dict[str, np.ndarray]:
        """Per-image metrics in update order, as float64 arrays of length ``len(self)``."""
        metrics = metrics_from_counts(self._all_counts(), dtype=torch.float64)
        return {name: value.numpy() for name, value in metrics.items()}

    def mean(self) -> dict[str, float]:
        """Mean of each metric over images (the paper's per-centre figures)."""
        self._require_data()
        return {name: float(value.mean()) for name, value in self.per_image().items()}

    def pooled(self) -> dict[str, float]:
        """Metrics of the dataset's summed TP/FP/FN/TN, as if it were one large image."""
        self._require_data()
        total = self._all_counts().sum(dim=0, keepdim=True)
        metrics = metrics_from_counts(total, dtype=torch.float64)
        return {name: float(value[0]) for name, value in metrics.items()}

    def _require_data(self) -> None:
        if not self._counts:
            raise ValueError("MetricAccumulator is empty: call update() before reading results")
