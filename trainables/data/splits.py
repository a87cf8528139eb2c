"""Leave-one-centre-out splits by patient (DESIGN §1 Evaluation).

For held-out centre k: within each other centre, patients are shuffled (seeded) and assigned to
train / val / test_in so that the *image* counts approach 80/10/10; every frame of centre k is
test_out. Splitting per centre keeps every training centre present in validation and in-
distribution test, and splitting by patient keeps near-duplicate frames of one patient from
leaking across splits.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLIT_NAMES = ("train", "val", "test_in", "test_out")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


@dataclass(frozen=True)
class FoldSplit:
    """Indices into the dataset for one held-out centre."""

    held_out: int
    seed: int
    train: np.ndarray
    val: np.ndarray
    test_in: np.ndarray
    test_out: np.ndarray

    def indices(self, split: str) -> np.ndarray:
        if split not in SPLIT_NAMES:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLIT_NAMES)}")
        return getattr(self, split)

    def training_centres(self, centres: np.ndarray) -> list[int]:
        return sorted({int(c) for c in centres[self.train]})

    def centre_labels(self, centres: np.ndarray) -> dict[int, int]:
        """Contiguous classifier labels 0..n-1 over the training centres (sorted)."""
        return {c: i for i, c in enumerate(self.training_centres(centres))}

    def to_csv(self, path: Path, names: Sequence[str], centres, patients: Sequence[str]) -> None:
        """Writes one row per frame: index, image, centre, patient, split."""
        split_of = {}
        for name in SPLIT_NAMES:
            for i in self.indices(name):
                split_of[int(i)] = name
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["index", "image", "centre", "patient", "split"])
            for i in sorted(split_of):
                writer.writerow([i, names[i], int(centres[i]), patients[i], split_of[i]])


def _assign_patients(sizes: list[int], fractions: tuple[float, float, float]) -> list[int]:
    """Split id (0 train, 1 val, 2 test_in) per patient, in the given (shuffled) order."""
    n = len(sizes)
    total = sum(sizes)
    bounds = np.cumsum(fractions)[:2] * total
    assigned, seen = [], 0
    for size in sizes:
        # A patient goes where the middle of its frame range falls on the 80/10/10 line.
        mid = seen + size / 2
        assigned.append(int(np.searchsorted(bounds, mid, side="right")))
        seen += size
    # With few patients the line can leave val or test_in empty; give each one patient taken
    # from train (the largest split) so every split of every training centre is represented.
    if n >= 3:
        for target in (1, 2):
            if target not in assigned:
                donors = [i for i, a in enumerate(assigned) if a == 0]
                if len(donors) > 1:
                    assigned[donors[-1]] = target
    return assigned


def leave_one_centre_out(
    centres: Sequence[int] | np.ndarray,
    patients: Sequence[str],
    held_out: int,
    *,
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> FoldSplit:
    """Splits a dataset for one held-out centre.

    Args:
        centres: centre number per frame.
        patients: patient id per frame (ids are scoped by centre).
        held_out: the centre used only as out-of-distribution test.
        seed: shuffles patients; the same inputs and seed give the same split.
        fractions: train/val/test_in shares of each training centre's frames.

    Raises:
        ValueError: if ``held_out`` is not a centre of the data, fractions do not sum to 1, or no
            training centre remains.
    """
    centres = np.asarray(centres)
    if len(centres) != len(patients):
        raise ValueError(f"{len(centres)} centres but {len(patients)} patients")
    present = sorted({int(c) for c in centres})
    if held_out not in present:
        raise ValueError(f"held_out_centre {held_out} is not in the data (centres: {present})")
    if len(present) < 2:
        raise ValueError(f"need at least two centres for leave-one-centre-out, got {present}")
    if abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"split fractions {fractions} must be non-negative and sum to 1")
    rng = np.random.default_rng([seed, held_out])
    buckets: list[list[int]] = [[], [], []]
    for c in present:
        if c == held_out:
            continue
        frames_of: dict[str, list[int]] = {}
        for i in np.flatnonzero(centres == c):
            frames_of.setdefault(patients[i], []).append(int(i))
        order = sorted(frames_of)
        rng.shuffle(order)
        for patient, split in zip(
            order, _assign_patients([len(frames_of[p]) for p in order], fractions)
        ):
            buckets[split].extend(frames_of[patient])
    return FoldSplit(
        held_out=held_out,
        seed=seed,
        train=np.array(sorted(buckets[0]), np.int64),
        val=np.array(sorted(buckets[1]), np.int64),
        test_in=np.array(sorted(buckets[2]), np.int64),
        test_out=np.flatnonzero(centres == held_out).astype(np.int64),
    )
