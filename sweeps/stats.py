"""Bootstrap confidence intervals for the difference between two arms (pure numpy).

The arms of a camsweep table are evaluated on the *same* out-of-distribution images, so their
per-image scores are paired: resampling images jointly removes the between-image variance
(easy vs hard frames) that both arms share, which an unpaired bootstrap would count as noise.
When an arm was trained with several seeds, training randomness is a second source of
variance: the two-level bootstrap resamples seeds within each arm as well as images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Bootstrap replicates are computed in blocks of this many so memory stays bounded
# (a block holds block × images floats) whatever n_boot is.
_BLOCK = 512

# Bootstrap resamples of every confidence interval camsweep prints (export and the table at
# the end of `camsweep run` alike): 10 000 keeps the Monte Carlo error of a 95 % bound ~0.002.
N_BOOT = 10_000


@dataclass(frozen=True)
class BootstrapCI:
    """A bootstrap estimate of ``mean(treated) - mean(control)`` with a percentile interval.

    Attributes:
        estimate: the observed difference of means (seed means of image means).
        low: lower end of the interval.
        high: upper end of the interval.
        level: the interval's nominal coverage, e.g. 0.95.
        n_images: images per arm.
        n_seeds: seeds (replicate trainings) of the treated and the control arm.
        n_boot: bootstrap replicates drawn.
        paired: whether images were resampled jointly for both arms.
    """

    estimate: float
    low: float
    high: float
    level: float
    n_images: int
    n_seeds: tuple[int, int]
    n_boot: int
    paired: bool

    @property
    def two_level(self) -> bool:
        """Whether seeds were resampled as well as images."""
        return max(self.n_seeds) > 1

    @property
    def width(self) -> float:
        return self.high - self.low

    def covers(self, value: float) -> bool:
        return self.low <= value <= self.high

    def method(self) -> str:
        """A short description of how the interval was computed, for captions and CSV files."""
        kind = "paired" if self.paired else "unpaired"
        levels = "two-level (seeds, then images)" if self.two_level else "over images"
        return (
            f"{kind} percentile bootstrap {levels}, {self.n_boot} resamples, "
            f"{self.n_images} images, seeds {self.n_seeds[0]} vs {self.n_seeds[1]}"
        )


def _as_matrix(values: np.ndarray | Sequence[float], name: str) -> np.ndarray:
    """Per-image scores as a (seeds, images) float matrix; a 1-D array is one seed."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name}: expected (images,) or (seeds, images) scores, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: scores must be finite (found NaN or inf)")
    return arr


def _seed_weights(rng: np.random.Generator, n_boot: int, n_seeds: int) -> np.ndarray:
    """(n_boot, n_seeds) weights of seeds drawn with replacement (each row sums to 1)."""
    if n_seeds == 1:
        return np.ones((n_boot, 1))
    draws = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    counts = (draws[:, :, None] == np.arange(n_seeds)).sum(axis=1)
    return counts / n_seeds


def _interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(replicates, [tail, 100.0 - tail])
    return float(low), float(high)


def _check(n_boot: int, level: float) -> None:
    if n_boot < 100:
        raise ValueError(f"n_boot {n_boot}: use at least 100 bootstrap replicates")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level {level}: must be in (0, 1)")


def paired_bootstrap(
    treated: np.ndarray | Sequence[float],
    control: np.ndarray | Sequence[float],
    *,
    n_boot: int = N_BOOT,
    level: float = 0.95,
    seed: int = 0,
) -> BootstrapCI:
    """Paired bootstrap CI of ``mean(treated) - mean(control)`` over images (and seeds).

    Column ``j`` of both arms must be the same image. Each replicate draws images with
    replacement — the same draw for both arms, which is what pairs them — and, for an arm with
    several seeds, draws that arm's seeds with replacement too (seeds of the two arms are
    independent trainings, so they are not paired).

    Args:
        treated: per-image scores of the treated arm, shape (images,) or (seeds, images).
        control: per-image scores of the control arm, aligned with ``treated`` by column.
        n_boot: bootstrap replicates.
        level: nominal coverage of the percentile interval.
        seed: seed of the resampling; the same inputs and seed give the same interval.

    Returns:
        The observed difference and its percentile interval.
    """
    _check(n_boot, level)
    a, b = _as_matrix(treated, "treated"), _as_matrix(control, "control")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"paired arms need the same images: treated has {a.shape[1]}, control {b.shape[1]}"
        )
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    replicates = np.empty(n_boot)
    for start in range(0, n_boot, _BLOCK):
        size = min(_BLOCK, n_boot - start)
        # Per image, the difference of the resampled seeds' means; then resample images.
        diff = _seed_weights(rng, size, a.shape[0]) @ a - _seed_weights(rng, size, b.shape[0]) @ b
        images = rng.integers(0, n, size=(size, n))
        replicates[start : start + size] = np.take_along_axis(diff, images, axis=1).mean(axis=1)
    low, high = _interval(replicates, level)
    return BootstrapCI(
        estimate=float(a.mean() - b.mean()),
        low=low,
        high=high,
        level=level,
        n_images=n,
        n_seeds=(a.shape[0], b.shape[0]),
        n_boot=n_boot,
        paired=True,
    )


def unpaired_bootstrap(
    treated: np.ndarray | Sequence[float],
    control: np.ndarray | Sequence[float],
    *,
    n_boot: int = N_BOOT,
    level: float = 0.95,
    seed: int = 0,
) -> BootstrapCI:
    """Bootstrap CI of ``mean(treated) - mean(control)`` resampling each arm independently.

    The right interval when the arms were scored on different images; on paired data it ignores
    the pairing and is wider. Arguments and result as :func:`paired_bootstrap`.
    """
    _check(n_boot, level)
    a, b = _as_matrix(treated, "treated"), _as_matrix(control, "control")
    rng = np.random.default_rng(seed)
    replicates = np.empty(n_boot)
    for start in range(0, n_boot, _BLOCK):
        size = min(_BLOCK, n_boot - start)
        means = []
        for arm in (a, b):
            per_image = _seed_weights(rng, size, arm.shape[0]) @ arm
            images = rng.integers(0, arm.shape[1], size=(size, arm.shape[1]))
            means.append(np.take_along_axis(per_image, images, axis=1).mean(axis=1))
        replicates[start : start + size] = means[0] - means[1]
    low, high = _interval(replicates, level)
    return BootstrapCI(
        estimate=float(a.mean() - b.mean()),
        low=low,
        high=high,
        level=level,
        n_images=min(a.shape[1], b.shape[1]),
        n_seeds=(a.shape[0], b.shape[0]),
        n_boot=n_boot,
        paired=False,
    )


def bootstrap_mean(
    values: np.ndarray | Sequence[float],
    *,
    n_boot: int = N_BOOT,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """The mean of per-image scores with its percentile bootstrap interval over images.

    Returns:
        ``(mean, low, high)``.
    """
    _check(n_boot, level)
    x = _as_matrix(values, "values")[0]
    rng = np.random.default_rng(seed)
    replicates = np.empty(n_boot)
    for start in range(0, n_boot, _BLOCK):
        size = min(_BLOCK, n_boot - start)
        replicates[start : start + size] = x[rng.integers(0, len(x), size=(size, len(x)))].mean(1)
    low, high = _interval(replicates, level)
    return float(x.mean()), low, high


def align_by_index(
    arrays: Sequence[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """Stacks per-image scores of several evaluations on the images they all share.

    Args:
        arrays: ``(image_index, scores)`` pairs, one per evaluation (trial), in any image order.

    Returns:
        The shared image indices (sorted) and a (evaluations, shared images) score matrix whose
        columns follow those indices.
    """
    if not arrays:
        raise ValueError("align_by_index: no arrays")
    for index, scores in arrays:
        if len(index) != len(scores):
            raise ValueError(f"index has {len(index)} entries but scores {len(scores)}")
        if len(np.unique(index)) != len(index):
            raise ValueError("image index has duplicate entries")
    common = arrays[0][0]
    for index, _ in arrays[1:]:
        common = np.intersect1d(common, index)
    common = np.sort(np.asarray(common))
    rows = []
    for index, scores in arrays:
        order = np.argsort(index)
        positions = np.searchsorted(np.asarray(index)[order], common)
        rows.append(np.asarray(scores, dtype=np.float64)[order][positions])
    return common, np.stack(rows)
