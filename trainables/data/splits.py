"""Leave-one-centre-out splits by patient.

For held-out centre k every frame of centre k is test_out; the other centres' patients go to
train / val / test_in, never a patient in two of them (near-duplicate frames of one patient would
otherwise leak across splits). Two schemes (``data.split``):

- ``per_centre`` (camsweep's default): within each training centre, patients are shuffled
  (seeded) and assigned so that the *frame* counts approach 80/10/10. Every training centre is
  then present in validation and in-distribution test.
- ``pooled`` (the authors' released loader): the patients of all training centres are pooled;
  80 % of the *patients* go to train and the rest are halved into validation and test_in, drawn
  the way scikit-learn's ``train_test_split(ids, train_size=0.8, random_state=seed)`` and then
  ``train_test_split(rest, train_size=0.5, random_state=seed)`` draw them (the authors used
  seed 1). Frame shares then vary with patient sizes, and a small centre can miss a split.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLIT_NAMES = ("train", "val", "test_in", "test_out")
SPLIT_SCHEMES = ("per_centre", "pooled")
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


def _sklearn_split(n: int, train_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, rest) positions as ``sklearn.model_selection.train_test_split(range(n),
    train_size=train_size, random_state=seed)`` returns them (ShuffleSplit: one legacy
    RandomState permutation, the test part first), without depending on scikit-learn."""
    n_train = int(np.floor(train_size * n))
    permutation = np.random.RandomState(seed).permutation(n)
    return permutation[n - n_train :], permutation[: n - n_train]


def pooled_patient_split(
    centres: np.ndarray, patients: Sequence[str], held_out: int, seed: int
) -> list[list[int]]:
    """Frame indices of train, val and test_in under the ``pooled`` scheme."""
    frames_of: dict[tuple[int, str], list[int]] = {}
    # Patients in the order the authors' loader meets them: centre by centre, then by first frame.
    for i in np.flatnonzero(centres != held_out):
        frames_of.setdefault((int(centres[i]), patients[i]), []).append(int(i))
    keys = sorted(frames_of, key=lambda k: (k[0], frames_of[k][0]))
    train, rest = _sklearn_split(len(keys), 0.8, seed)
    val, test_in = _sklearn_split(len(rest), 0.5, seed)
    return [
        [i for pos in chosen for i in frames_of[keys[pos]]]
        for chosen in (train, rest[val], rest[test_in])
    ]


def leave_one_centre_out(
    centres: Sequence[int] | np.ndarray,
    patients: Sequence[str],
    held_out: int,
    *,
    seed: int = 0,
    scheme: str = "per_centre",
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> FoldSplit:
    """Splits a dataset for one held-out centre.

    Args:
        centres: centre number per frame.
        patients: patient id per frame (ids are scoped by centre).
        held_out: the centre used only as out-of-distribution test.
        seed: shuffles patients; the same inputs and seed give the same split.
        scheme: ``per_centre`` or ``pooled`` (see the module docstring).
        fractions: train/val/test_in shares of each training centre's frames (``per_centre``).

    Raises:
        ValueError: if ``held_out`` is not a centre of the data, fractions do not sum to 1, the
            scheme is unknown, or no training centre remains.
    """
    if scheme not in SPLIT_SCHEMES:
        raise ValueError(f"unknown split scheme {scheme!r}; valid: {', '.join(SPLIT_SCHEMES)}")
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
    if scheme == "pooled":
        buckets = pooled_patient_split(centres, patients, held_out, seed)
        return _fold(held_out, seed, buckets, centres)
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
    return _fold(held_out, seed, buckets, centres)


def _fold(held_out: int, seed: int, buckets: list[list[int]], centres: np.ndarray) -> FoldSplit:
    return FoldSplit(
        held_out=held_out,
        seed=seed,
        train=np.array(sorted(buckets[0]), np.int64),
        val=np.array(sorted(buckets[1]), np.int64),
        test_in=np.array(sorted(buckets[2]), np.int64),
        test_out=np.flatnonzero(centres == held_out).astype(np.int64),
    )
