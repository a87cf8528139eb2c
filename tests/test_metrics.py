from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_f1_score,
    binary_jaccard_index,
    binary_precision,
    binary_recall,
)

from trainables.metric_keys import METRIC_NAMES
from trainables.metrics import MetricAccumulator, per_image_metrics

REFERENCE = {
    "dice": binary_f1_score,
    "iou": binary_jaccard_index,
    "recall": binary_recall,
    "precision": binary_precision,
}


def _reference(probs: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """torchmetrics per image, with zero_division=1 where the metric can divide by zero."""
    result: dict[str, list[torch.Tensor]] = {name: [] for name in METRIC_NAMES}
    for p, t in zip(probs, target.long(), strict=True):
        for name, fn in REFERENCE.items():
            result[name].append(fn(p, t, zero_division=1.0))
        result["accuracy"].append(binary_accuracy(p, t))
    return {name: torch.stack(values) for name, values in result.items()}


def _random_case(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    # Quantised probabilities put many pixels exactly on the 0.5 threshold.
    probs = torch.randint(0, 11, (batch, 1, 32, 32), generator=generator) / 10
    target = (torch.rand(batch, 1, 32, 32, generator=generator) < 0.3).float()
    return probs, target


def test_matches_torchmetrics_on_random_masks() -> None:
    torch.manual_seed(0)
    probs, target = _random_case(4, seed=1)
    assert (probs == 0.5).any()
    metrics = per_image_metrics(probs, target)
    assert tuple(metrics) == METRIC_NAMES
    expected = _reference(probs, target)
    for name in METRIC_NAMES:
        assert metrics[name].shape == (4,)
        torch.testing.assert_close(metrics[name], expected[name], msg=name)


def test_half_probability_is_background() -> None:
    target = torch.tensor([[[[1.0, 1.0]]]])
    metrics = per_image_metrics(torch.tensor([[[[0.5, 0.51]]]]), target)
    assert metrics["recall"].item() == pytest.approx(0.5)
    assert metrics["precision"].item() == pytest.approx(1.0)


def _case(pred: list[int], truth: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.tensor(pred, dtype=torch.float32).view(1, 1, 1, -1),
        torch.tensor(truth, dtype=torch.float32).view(1, 1, 1, -1),
    )


@pytest.mark.parametrize(
    ("pred", "truth", "expected"),
    [
        # both empty: nothing to find and nothing found
        ([0, 0, 0, 0], [0, 0, 0, 0], {"dice": 1, "iou": 1, "recall": 1, "precision": 1}),
        # false alarm on a polyp-free image
        ([1, 0, 0, 0], [0, 0, 0, 0], {"dice": 0, "iou": 0, "recall": 1, "precision": 0}),
        # polyp missed entirely
        ([0, 0, 0, 0], [0, 1, 1, 0], {"dice": 0, "iou": 0, "recall": 0, "precision": 1}),
    ],
)
def test_empty_mask_conventions(pred: list[int], truth: list[int], expected: dict) -> None:
    probs, target = _case(pred, truth)
    metrics = per_image_metrics(probs, target)
    for name, value in expected.items():
        assert metrics[name].item() == value, name
    reference = _reference(probs, target)
    for name in METRIC_NAMES:
        torch.testing.assert_close(metrics[name], reference[name], msg=name)
    assert not any(torch.isnan(v).any() for v in metrics.values())


def test_pooled_and_mean_of_images_differ_where_they_should() -> None:
    # Image 0: a 60-pixel polyp found exactly. Image 1: a 4-pixel polyp missed.
    target = torch.zeros(2, 1, 10, 10)
    target[0, 0, :6] = 1
    target[1, 0, 0, :4] = 1
    probs = torch.zeros(2, 1, 10, 10)
    probs[0, 0, :6] = 0.9
    accumulator = MetricAccumulator()
    accumulator.update(probs, target)
    mean = accumulator.mean()
    pooled = accumulator.pooled()
    assert mean["dice"] == pytest.approx(0.5)
    assert pooled["dice"] == pytest.approx(2 * 60 / (2 * 60 + 4))
    assert mean["recall"] == pytest.approx(0.5)
    assert pooled["recall"] == pytest.approx(60 / 64)
    # Accuracy has the same denominator for every image, so both views agree.
    assert mean["accuracy"] == pytest.approx(pooled["accuracy"]) == pytest.approx(196 / 200)


def test_pooled_matches_torchmetrics_over_all_pixels() -> None:
    accumulator = MetricAccumulator()
    batches = [_random_case(3, seed=s) for s in range(3)]
    for probs, target in batches:
        accumulator.update(probs, target)
    probs = torch.cat([b[0] for b in batches]).flatten()
    target = torch.cat([b[1] for b in batches]).long().flatten()
    pooled = accumulator.pooled()
    for name, fn in REFERENCE.items():
        assert pooled[name] == pytest.approx(fn(probs, target).item(), abs=1e-6), name
    assert pooled["accuracy"] == pytest.approx(binary_accuracy(probs, target).item(), abs=1e-6)


def test_accumulator_concatenates_batches_in_order() -> None:
    accumulator = MetricAccumulator()
    batches = [_random_case(n, seed=10 + n) for n in (2, 3, 1)]
    for probs, target in batches:
        accumulator.update(probs, target.bool())
    assert len(accumulator) == 6
    per_image = accumulator.per_image()
    expected = {
        name: torch.cat([per_image_metrics(p, t)[name] for p, t in batches]).double().numpy()
        for name in METRIC_NAMES
    }
    for name in METRIC_NAMES:
        assert isinstance(per_image[name], np.ndarray) and per_image[name].shape == (6,)
        np.testing.assert_allclose(per_image[name], expected[name], atol=1e-6)
        assert accumulator.mean()[name] == pytest.approx(expected[name].mean())
    accumulator.reset()
    assert len(accumulator) == 0
    with pytest.raises(ValueError, match="empty"):
        accumulator.mean()
    with pytest.raises(ValueError, match="empty"):
        accumulator.pooled()


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        per_image_metrics(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 5))
