"""Bootstrap confidence intervals: recovery, coverage, pairing, seeds, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from sweeps.stats import align_by_index, paired_bootstrap, unpaired_bootstrap


def paired_data(rng: np.random.Generator, n: int = 200, diff: float = 0.05, noise: float = 0.1):
    """Per-image Dice of two arms on the same images: a shared image difficulty plus noise."""
    difficulty = rng.uniform(0.3, 0.9, n)
    control = difficulty + rng.normal(0, noise, n)
    treated = difficulty + diff + rng.normal(0, noise, n)
    return treated, control


def test_recovers_a_known_mean_difference():
    rng = np.random.default_rng(0)
    treated, control = paired_data(rng)
    ci = paired_bootstrap(treated, control, n_boot=4000, seed=1)
    assert ci.estimate == pytest.approx(treated.mean() - control.mean())
    assert abs(ci.estimate - 0.05) < 0.03
    assert ci.covers(0.05) and not ci.covers(0.0)
    assert ci.low < ci.estimate < ci.high
    assert ci.n_images == 200 and ci.n_seeds == (1, 1) and ci.paired and not ci.two_level


def test_95_percent_interval_covers_the_true_difference_at_the_stated_rate():
    rng = np.random.default_rng(42)
    covered = 0
    runs = 200
    for i in range(runs):
        treated, control = paired_data(rng)
        covered += paired_bootstrap(treated, control, n_boot=1000, seed=i).covers(0.05)
    assert 0.90 <= covered / runs <= 0.99


def test_pairing_narrows_the_interval_when_arms_are_correlated():
    rng = np.random.default_rng(3)
    treated, control = paired_data(rng, noise=0.03)  # image difficulty dominates the variance
    paired = paired_bootstrap(treated, control, n_boot=2000, seed=0)
    unpaired = unpaired_bootstrap(treated, control, n_boot=2000, seed=0)
    assert paired.estimate == pytest.approx(unpaired.estimate)
    assert paired.width < 0.5 * unpaired.width
    assert not unpaired.paired and "unpaired" in unpaired.method()


def test_same_seed_same_interval_and_another_seed_differs():
    rng = np.random.default_rng(5)
    treated, control = paired_data(rng)
    first = paired_bootstrap(treated, control, n_boot=1000, seed=7)
    assert first == paired_bootstrap(treated, control, n_boot=1000, seed=7)
    other = paired_bootstrap(treated, control, n_boot=1000, seed=8)
    assert (other.low, other.high) != (first.low, first.high)


def test_two_level_bootstrap_accounts_for_seed_to_seed_variation():
    rng = np.random.default_rng(11)
    n, seeds = 150, 4
    difficulty = rng.uniform(0.3, 0.9, n)
    # Each training seed shifts an arm's scores on every image: variance images cannot explain.
    control = difficulty + rng.normal(0, 0.05, (seeds, 1)) + rng.normal(0, 0.02, (seeds, n))
    treated = difficulty + 0.05 + rng.normal(0, 0.05, (seeds, 1)) + rng.normal(0, 0.02, (seeds, n))
    two_level = paired_bootstrap(treated, control, n_boot=2000, seed=0)
    images_only = paired_bootstrap(treated.mean(0), control.mean(0), n_boot=2000, seed=0)
    assert two_level.two_level and two_level.n_seeds == (seeds, seeds)
    assert "two-level" in two_level.method()
    assert two_level.estimate == pytest.approx(treated.mean() - control.mean())
    assert two_level.estimate == pytest.approx(images_only.estimate)
    assert two_level.width > 2 * images_only.width


def test_arms_with_different_seed_counts_work():
    rng = np.random.default_rng(2)
    treated, control = paired_data(rng, n=80)
    treated_seeds = np.stack([treated, treated + 0.01, treated - 0.01])
    ci = paired_bootstrap(treated_seeds, control, n_boot=500, seed=0)
    assert ci.n_seeds == (3, 1) and ci.two_level
    assert ci.estimate == pytest.approx(treated.mean() - control.mean())


def test_rejects_misaligned_or_invalid_inputs():
    with pytest.raises(ValueError, match="same images"):
        paired_bootstrap(np.ones(10), np.ones(9))
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap(np.array([0.5, np.nan]), np.array([0.5, 0.4]))
    with pytest.raises(ValueError, match="at least 100"):
        paired_bootstrap(np.ones(10), np.ones(10), n_boot=10)


def test_align_by_index_matches_images_across_orders_and_keeps_shared_ones():
    index_a = np.array([3, 1, 2, 0])
    scores_a = np.array([0.3, 0.1, 0.2, 0.0])
    index_b = np.array([0, 1, 2, 3, 4])
    scores_b = np.array([1.0, 1.1, 1.2, 1.3, 1.4])
    common, matrix = align_by_index([(index_a, scores_a), (index_b, scores_b)])
    assert common.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(matrix, [[0.0, 0.1, 0.2, 0.3], [1.0, 1.1, 1.2, 1.3]])
    with pytest.raises(ValueError, match="duplicate"):
        align_by_index([(np.array([1, 1]), np.array([0.1, 0.2]))])
