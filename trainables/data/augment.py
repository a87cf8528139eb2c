"""The paper's training augmentations (rotation, flips, colour jitter), built with albumentations.

Geometric transforms (rotation, horizontal and vertical flips) move the image, the polyp mask and
the cached CAM together — the CAM is registered as an extra *mask* target so it follows the same
geometry with nearest-neighbour sampling (it is binarised afterwards anyway). Colour jitter acts
on the image only. Normalisation (ImageNet statistics) comes last by default, in training and
evaluation alike: :func:`to_normalized_chw`, which the dataset applies after the transform. With
``normalise: first`` (the released code's order) the transform normalises before everything else
and hands over a float image, which the dataset then only transposes.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

from trainables.config import AugmentConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# x' = (x - 255·mean) / (255·std) = x·scale + shift, per channel.
_SCALE = [1.0 / (255.0 * s) for s in IMAGENET_STD]
_SHIFT = [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]


def to_normalized_chw(image: np.ndarray) -> np.ndarray:
    """ImageNet-normalised float32 (3, H, W) from a uint8 (H, W, 3) RGB image.

    Equals ``A.Normalize(IMAGENET_MEAN, IMAGENET_STD)`` followed by the HWC→CHW copy, fused: one
    scale-and-shift per colour plane written straight into the channels-first float array
    (cv2.addWeighted with a float32 output). At 256² that is ~0.2 ms instead of ~0.6 ms, which was
    a third of the per-image cost of the loader path.
    """
    out = np.empty((3, *image.shape[:2]), np.float32)
    for c, plane in enumerate(cv2.split(image)):
        cv2.addWeighted(plane, _SCALE[c], plane, 0.0, _SHIFT[c], dst=out[c], dtype=cv2.CV_32F)
    return out


# OpenCV's border mode per ``AugmentConfig.rotate_border``, for image, mask and CAM alike.
ROTATE_BORDERS = {"constant": cv2.BORDER_CONSTANT, "reflect": cv2.BORDER_REFLECT_101}


def build_train_transform(cfg: AugmentConfig, seed: int | None = None) -> A.Compose:
    """The augmentations on uint8 HWC arrays.

    The output is uint8 with ``normalise: last`` (normalise afterwards, :func:`to_normalized_chw`)
    and the ImageNet-normalised float32 image with ``normalise: first``.
    """
    steps = [
        A.Rotate(
            limit=cfg.rotate_limit,
            border_mode=ROTATE_BORDERS[cfg.rotate_border],
            mask_interpolation=cv2.INTER_NEAREST,
            p=cfg.rotate_p,
        ),
        A.HorizontalFlip(p=cfg.hflip_p),
        A.VerticalFlip(p=cfg.vflip_p),
        # Brightness, contrast and saturation keep albumentations' (0.8, 1.2), which is also
        # what the released code's 0.2 each means.
        A.ColorJitter(hue=(-cfg.hue, cfg.hue), p=cfg.color_jitter_p),
    ]
    if cfg.normalise == "first":
        # The released code's A.Normalize() (ImageNet statistics, max_pixel_value 255) leads.
        # Its flips come before its rotation, ours after: a flip F turns R(θ) into R(-θ) F and
        # the angle is drawn symmetrically, so both orders give the same distribution.
        steps.insert(0, A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD, max_pixel_value=255.0))
    return A.Compose(steps, additional_targets={"cam": "mask"}, seed=seed)


def to_chw(image: np.ndarray) -> np.ndarray:
    """The network's float32 (3, H, W) input from a training transform's output.

    A uint8 image is normalised here (``normalise: last``); a float image comes from a transform
    that has normalised it already (``normalise: first``) and is only transposed, so the
    normalisation is never applied twice. The decoded cache itself is always uint8.
    """
    if image.dtype == np.uint8:
        return to_normalized_chw(image)
    if image.dtype != np.float32:
        raise TypeError(f"expected a uint8 or normalised float32 image, got {image.dtype}")
    return np.ascontiguousarray(image.transpose(2, 0, 1))


def denormalize(image_chw: np.ndarray) -> np.ndarray:
    """Undoes the normalisation, giving an HWC uint8 image for figures."""
    mean = np.asarray(IMAGENET_MEAN)[:, None, None]
    std = np.asarray(IMAGENET_STD)[:, None, None]
    hwc = (image_chw * std + mean).transpose(1, 2, 0)
    return np.clip(hwc * 255 + 0.5, 0, 255).astype(np.uint8)
