"""The interface every segmentation model of the registry implements."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

OCCLUSION_TARGETS = ("input", "anatomy")


class SegmentationNet(nn.Module, metaclass=ABCMeta):
    """Base class of the models returned by `build_model`.

    Attributes:
        occlusion_target: Where `forward` applies the CAM occlusion. ``"input"``: the image is
            multiplied by it before the network (UNet, DeepLabV3+). ``"anatomy"``: the anatomy
            representation is multiplied by it before the segmentor only, while reconstruction
            uses the unmasked anatomy (SDNet).
    """

    occlusion_target: ClassVar[str]

    @abstractmethod
    def forward(self, x: Tensor, occlusion: Tensor | None = None) -> dict[str, Tensor]:
        """Segments a batch.

        Args:
            x: (B, C, H, W) ImageNet-normalised images.
            occlusion: (B, 1, H', W') multiplicative {0, 1} factor, ones for samples that are not
                augmented; resized (nearest) to the tensor it multiplies. None: no masking.

        Returns:
            At least ``"logits"``, the (B, 1, H, W) polyp logit, and ``"model_input"``, the
            image the network actually saw (masked for ``occlusion_target == "input"``).
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


def match_occlusion(occlusion: Tensor, like: Tensor) -> Tensor:
    """Checks an occlusion map and resizes it (nearest) to the spatial size of `like`.

    Args:
        occlusion: (B, 1, H, W) multiplicative mask.
        like: (B, C, H', W') tensor the mask will multiply.

    Returns:
        The mask as (B, 1, H', W') with the dtype and device of `like`.
    """
    if occlusion.ndim != 4 or occlusion.shape[1] != 1 or occlusion.shape[0] != like.shape[0]:
        raise ValueError(
            f"occlusion must have shape (B, 1, H, W) with B={like.shape[0]}, "
            f"got {tuple(occlusion.shape)}"
        )
    occlusion = occlusion.to(device=like.device, dtype=like.dtype)
    if occlusion.shape[-2:] != like.shape[-2:]:
        # Nearest keeps the mask binary; bilinear would create fractional occlusion at edges.
        occlusion = F.interpolate(occlusion, size=like.shape[-2:], mode="nearest")
    return occlusion


def apply_occlusion(t: Tensor, occlusion: Tensor | None) -> Tensor:
    """Returns `t * occlusion` (resized to `t`), or `t` itself when `occlusion` is None."""
    if occlusion is None:
        return t
    return t * match_occlusion(occlusion, t)


def detached_parts(**parts: Tensor) -> dict[str, Tensor]:
    """Detaches loss parts so logging them keeps no autograd graph alive."""
    return {k: v.detach() for k, v in parts.items()}


__all__ = [
    "OCCLUSION_TARGETS",
    "SegmentationNet",
    "apply_occlusion",
    "detached_parts",
    "match_occlusion",
]
