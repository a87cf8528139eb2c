"""Decoding and resizing of frames and masks — the one place that reads pixels from disk."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from trainables.data.polypgen import Record

MASK_THRESHOLD = 128  # PolypGen masks are JPEGs: binarise to undo compression noise.


class DecodeError(ValueError):
    """A file that cannot be read as an image; the message names it."""


def image_size_of(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as exc:  # PIL raises several types for unreadable files
        raise DecodeError(f"{path}: unreadable image ({exc})") from exc


def _decode(path: Path, mode: str, target: int | None) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if target is not None:
                # JPEG DCT scaling: decoding a 1920×1080 frame straight to ≥ target size is several
                # times faster than a full decode and loses nothing after the final resize.
                im.draft(mode, (target, target))
            return np.asarray(im.convert(mode))
    except Exception as exc:
        raise DecodeError(f"{path}: unreadable or corrupt image ({exc})") from exc


def read_image(path: Path, size: int | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3); resized to size×size (area interpolation) when size is given."""
    rgb = _decode(path, "RGB", size)
    if size is not None and rgb.shape[:2] != (size, size):
        rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    return rgb


def read_mask(path: Path, size: int | None = None) -> np.ndarray:
    """Binary uint8 {0, 1} (H, W), thresholded at 128 after resizing."""
    gray = _decode(path, "L", size)
    if size is not None and gray.shape != (size, size):
        gray = cv2.resize(gray, (size, size), interpolation=cv2.INTER_LINEAR)
    return (gray >= MASK_THRESHOLD).astype(np.uint8)


def decode_record(r: Record, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Image, mask and overlay of one frame at size×size.

    Raises:
        DecodeError: naming every unreadable file of the frame, or a mask whose size differs from
            its image's (one message per file).
    """
    problems, decoded = [], {}
    for kind, path, reader in (
        ("image", r.image, read_image),
        ("mask", r.mask, read_mask),
        ("overlay", r.overlay, read_mask),
    ):
        if path is None:
            continue
        try:
            decoded[kind] = reader(path, size)
        except DecodeError as exc:
            problems.append(str(exc))
    if "image" in decoded and "mask" in decoded:
        image_wh, mask_wh = image_size_of(r.image), image_size_of(r.mask)
        if image_wh != mask_wh:
            problems.append(
                f"{r.mask}: mask size {mask_wh} differs from image size {image_wh} ({r.image.name})"
            )
    if problems:
        raise DecodeError("\n".join(problems))
    return decoded["image"], decoded["mask"], decoded.get("overlay")
