"""The device memory one trial needs at least, measured without a GPU.

One source for ``benchmarks.gpu``'s ``memory_per_trial_floor`` figure and the preflight's check
that each GPU has room for the trials packed on it (``sweeps/preflight.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainables.models import SegmentationNet


def images_per_epoch(frames: int) -> float:
    """Mean training-split size over six leave-one-centre-out folds: 80 % of the frames of the
    other five centres."""
    return 0.8 * (frames - frames / 6)


def memory_floor_gib(model: SegmentationNet, size: int, batch: int, frames: int) -> float:
    """Device memory one trial of ``model`` needs at least, from its device-independent parts:
    the tensors its training step saves for backward (fp32; the forward pass alone records them),
    its weights with their gradients and AdamW's two moments, and what the device data path keeps
    resident — every frame (uint8 image and mask) and the training split's CAMs (fp16). Leaves
    out the CUDA context, cuDNN workspaces and allocator slack: a floor, not a peak."""
    import torch

    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    saved: dict[int, int] = {}

    def record(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:  # weights are counted once, below
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    x = torch.randn(batch, 3, size, size)
    y = (torch.rand(batch, 1, size, size) > 0.5).float()
    with torch.autograd.graph.saved_tensors_hooks(record, lambda t: t):
        model.loss(model(x), x, y)
    resident = frames * size * size * 4 + images_per_epoch(frames) * size * size * 2
    return (sum(saved.values()) + 4 * weight_bytes + resident) / 2**30
