"""The interface every segmentation model of the registry implements."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

MASKING_TARGETS = ("input", "anatomy")


class SegmentationNet(nn.Module, metaclass=ABCMeta):
    """Base class of the models returned by `build_model`.

    Attributes:
        masking_target: Where `forward` applies the CAM mask_factor. ``"input"``: the image is
            multiplied by it before the network (UNet, DeepLabV3+). ``"anatomy"``: the anatomy
            representation is multiplied by it before the segmentor only, while reconstruction
            uses the unmasked anatomy (SDNet).
    """

    masking_target: ClassVar[str]

    @abstractmethod
    def forward(self, x: Tensor, mask_factor: Tensor | None = None) -> dict[str, Tensor]:
        """Segments a batch.

        Args:
            x: (B, C, H, W) ImageNet-normalised images.
            mask_factor: (B, 1, H', W') multiplicative {0, 1} factor, ones for samples that are not
                augmented; resized (nearest) to the tensor it multiplies. None: no masking.

        Returns:
            At least ``"logits"``, the (B, 1, H, W) polyp logit, and ``"model_input"``, the
            image the network actually saw (masked for ``masking_target == "input"``).
        """

    @abstractmethod
    def loss(
        self, out: dict[str, Tensor], x: Tensor, y: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Training loss of one batch.

        Args:
            out: The dict returned by `forward`.
            x: The (unmasked) input images given to `forward`.
            y: (B, 1, H, W) float ground-truth masks in {0, 1}.

        Returns:
            The scalar loss to minimise and its detached named parts (always ``"dice"``).
        """


def match_masking(mask_factor: Tensor, like: Tensor) -> Tensor:
    """Checks an mask_factor map and resizes it (nearest) to the spatial size of `like`.

    Args:
        mask_factor: (B, 1, H, W) multiplicative mask.
        like: (B, C, H', W') tensor the mask will multiply.

    Returns:
        The mask as (B, 1, H', W') with the dtype and device of `like`.
    """
    if mask_factor.ndim != 4 or mask_factor.shape[1] != 1 or mask_factor.shape[0] != like.shape[0]:
        raise ValueError(
            f"mask_factor must have shape (B, 1, H, W) with B={like.shape[0]}, "
            f"got {tuple(mask_factor.shape)}"
        )
    mask_factor = mask_factor.to(device=like.device, dtype=like.dtype)
    if mask_factor.shape[-2:] != like.shape[-2:]:
        # Nearest keeps the mask binary; bilinear would create fractional mask_factor at edges.
        mask_factor = F.interpolate(mask_factor, size=like.shape[-2:], mode="nearest")
    return mask_factor


def apply_mask_factor(t: Tensor, mask_factor: Tensor | None) -> Tensor:
    """Returns `t * mask_factor` (resized to `t`), or `t` itself when `mask_factor` is None."""
    if mask_factor is None:
        return t
    return t * match_masking(mask_factor, t)


def detached_parts(**parts: Tensor) -> dict[str, Tensor]:
    """Detaches loss parts so logging them keeps no autograd graph alive."""
    return {k: v.detach() for k, v in parts.items()}


__all__ = [
    "MASKING_TARGETS",
    "SegmentationNet",
    "apply_mask_factor",
    "detached_parts",
    "match_masking",
]
