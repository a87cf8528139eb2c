"""Training augmentations of DESIGN §1, built with albumentations.

Geometric transforms (rotation, horizontal and vertical flips) move the image, the polyp mask and
the cached CAM together — the CAM is registered as an extra *mask* target so it follows the same
geometry with nearest-neighbour sampling (it is binarised afterwards anyway). Colour jitter acts
on the image only. Normalisation (ImageNet statistics) comes last and is applied in evaluation too.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class AugmentConfig(BaseModel):
    """Training-only augmentation settings (paper defaults)."""

    model_config = ConfigDict(extra="forbid")

    rotate_p: float = Field(0.5, ge=0, le=1)
    rotate_limit: float = Field(90.0, ge=0, le=180, description="max rotation, degrees")
    hflip_p: float = Field(0.5, ge=0, le=1)
    vflip_p: float = Field(0.5, ge=0, le=1)
    color_jitter_p: float = Field(0.3, ge=0, le=1)


def _normalize() -> A.Normalize:
    return A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD, max_pixel_value=255.0)


def build_train_transform(cfg: AugmentConfig, seed: int | None = None) -> A.Compose:
    return A.Compose(
        [
            A.Rotate(
                limit=cfg.rotate_limit,
                border_mode=cv2.BORDER_CONSTANT,
                mask_interpolation=cv2.INTER_NEAREST,
                p=cfg.rotate_p,
            ),
            A.HorizontalFlip(p=cfg.hflip_p),
            A.VerticalFlip(p=cfg.vflip_p),
            A.ColorJitter(p=cfg.color_jitter_p),
            _normalize(),
        ],
        additional_targets={"cam": "mask"},
        seed=seed,
    )


def build_eval_transform() -> A.Compose:
    return A.Compose([_normalize()], additional_targets={"cam": "mask"})


def denormalize(image_chw: np.ndarray) -> np.ndarray:
    """Undoes the normalisation, giving an HWC uint8 image for figures."""
    mean = np.asarray(IMAGENET_MEAN)[:, None, None]
    std = np.asarray(IMAGENET_STD)[:, None, None]
    hwc = (image_chw * std + mean).transpose(1, 2, 0)
    return np.clip(hwc * 255 + 0.5, 0, 255).astype(np.uint8)
