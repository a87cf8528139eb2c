"""Synthetic PolypGen-like dataset generator.

Writes colonoscopy-like frames in the real PolypGen single-frame layout so that the real loader is
what tests, the demo and the benchmarks exercise::

    out/data_C{k}/images_C{k}/{stem}.jpg            RGB frame (JPEG)
    out/data_C{k}/masks_C{k}/{stem}_mask.jpg        polyp mask, 0/255 grayscale JPEG
    out/data_C{k}/overlays_C{k}/{stem}_overlay.png  extra-anatomical overlay mask, 0/255 PNG
    out/synth.json                                  generator arguments and per-centre counts

with ``stem = C{k}_P{patient:03d}_{frame:04d}`` (``frame`` counts the patient's frames from 0).

Every centre burns in its own style of extra-anatomical content (borders, text, scope thumbnail,
frame miniature, status bar), which is the main cue that tells the centres apart; its pixels are
saved as the overlay mask so CAM localisation can be scored. Mucosa, polyps and lighting are drawn
from the same distributions for every centre. Frames of one patient share tint and lighting.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

POLYPGEN_CENTRE_SIZES: dict[int, int] = {1: 256, 2: 301, 3: 457, 4: 227, 5: 208, 6: 88}

MIN_SIDE = 32
FORMAT_VERSION = 1
MANIFEST_NAME = "synth.json"

_JPEG_QUALITY = 95
# Masks are stored as JPEG to match PolypGen; maximum quality keeps the ringing far from the
# 128 threshold readers binarise at.
_MASK_JPEG_QUALITY = 100
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BASE_MUCOSA_RGB = np.array([205.0, 96.0, 84.0], dtype=np.float32)
# Shading is computed on a small grid and upsampled: it is smooth anyway, and this keeps
# 1920x1080 frames cheap.
_LOW_RES_MAX_SIDE = 192
_POLYP_COUNT_P = (0.2, 0.45, 0.25, 0.1)

# Tags that keep the independent random streams of one (seed, centre) apart.
_TAG_PARTITION = 0
_TAG_PATIENT = 1
_TAG_FRAME = 2


@dataclass(frozen=True)
class SynthRecord:
    """One generated frame.

    Attributes:
        image: The RGB frame (JPEG).
        mask: The polyp mask (0/255 grayscale JPEG), without overlay pixels.
        overlay: The extra-anatomical overlay mask (0/255 PNG).
        centre: The centre, 1..6.
        patient: The patient id, ``P{n:03d}``, unique within the centre.
    """

    image: Path
    mask: Path
    overlay: Path
    centre: int
    patient: str


@dataclass(frozen=True)
class _PatientStyle:
    colour: np.ndarray  # mucosa RGB after tint and brightness
    light: tuple[float, float]  # lighting centre as fractions of width and height
    vignette: float


def parse_size(text: str) -> tuple[int, int]:
    """Parses ``"WIDTHxHEIGHT"`` (e.g. ``"640x480"``) into ``(width, height)``.

    Raises:
        ValueError: If the text is not of that form or a side is below 32 pixels.
    """
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if match is None:
        raise ValueError(f"invalid size {text!r}: expected WIDTHxHEIGHT, e.g. '640x480'")
    size = (int(match.group(1)), int(match.group(2)))
    _check_size(size)
    return size


def generate(
    out: Path,
    *,
    per_centre: int | None = None,
    scale: float | None = None,
    size: tuple[int, int] = (640, 480),
    seed: int = 0,
    centres: Sequence[int] = (1, 2, 3, 4, 5, 6),
    overwrite: bool = False,
) -> list[SynthRecord]:
    """Generates a synthetic PolypGen-like dataset under ``out``.

    Args:
        out: Output root; created if missing.
        per_centre: Number of frames per centre. Mutually exclusive with ``scale``.
        scale: Fraction of the real PolypGen centre sizes (``POLYPGEN_CENTRE_SIZES``), at least
            one frame per centre; 1.0 when neither ``per_centre`` nor ``scale`` is given.
        size: Frame size as (width, height), each side at least 32.
        seed: Non-negative seed; the same arguments give byte-identical files.
        centres: Centres to generate, a subset of 1..6.
        overwrite: Replace a synthetic dataset already in ``out`` (recognised by its
            ``synth.json``). Folders of anything else are never deleted.

    Returns:
        One record per frame, ordered by centre, then patient, then frame.

    Raises:
        ValueError: On invalid arguments (the message names the offending value).
        FileExistsError: If ``out`` already holds dataset folders and ``overwrite`` is false,
            or holds a dataset that this generator did not write.
    """
    if per_centre is not None and scale is not None:
        raise ValueError(
            f"give per_centre or scale, not both (per_centre={per_centre}, scale={scale})"
        )
    if per_centre is not None and (not _is_int(per_centre) or per_centre < 1):
        raise ValueError(f"per_centre must be a positive integer, got {per_centre!r}")
    if scale is not None and not (0 < scale < float("inf")):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    _check_size(size)
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    centres = _check_centres(centres)
    width, height, seed = int(size[0]), int(size[1]), int(seed)
    per_centre = None if per_centre is None else int(per_centre)
    out = Path(out)
    _prepare_output(out, overwrite)

    counts = {
        k: per_centre
        if per_centre is not None
        else max(1, round((1.0 if scale is None else scale) * POLYPGEN_CENTRE_SIZES[k]))
        for k in centres
    }
    manifest = {
        "generator": "trainables.data.synthetic",
        "format_version": FORMAT_VERSION,
        "complete": False,
        "seed": seed,
        "size": [width, height],
        "per_centre": per_centre,
        "scale": scale,
        "centres": list(centres),
        "counts": {str(k): counts[k] for k in centres},
    }
    # Written first so that an interrupted run is still recognised (and replaced) by
    # overwrite=True; "complete" tells readers whether every file is there.
    out.mkdir(parents=True, exist_ok=True)
    _write_manifest(out, manifest)
    records: list[SynthRecord] = []
    patients_per_centre: dict[int, int] = {}
    for centre in centres:
        image_dir = out / f"data_C{centre}" / f"images_C{centre}"
        mask_dir = out / f"data_C{centre}" / f"masks_C{centre}"
        overlay_dir = out / f"data_C{centre}" / f"overlays_C{centre}"
        for folder in (image_dir, mask_dir, overlay_dir):
            folder.mkdir(parents=True, exist_ok=True)
        sizes = _patient_sizes(seed, centre, counts[centre])
        patients_per_centre[centre] = len(sizes)
        index = 0
        for patient_no, n_frames in enumerate(sizes, start=1):
            style = _patient_style(seed, centre, patient_no)
            patient = f"P{patient_no:03d}"
            for frame in range(n_frames):
                rgb, polyp, overlay = _render(seed, centre, index, style, width, height)
                stem = f"C{centre}_{patient}_{frame:04d}"
                record = SynthRecord(
                    image=image_dir / f"{stem}.jpg",
                    mask=mask_dir / f"{stem}_mask.jpg",
                    overlay=overlay_dir / f"{stem}_overlay.png",
                    centre=centre,
                    patient=patient,
                )
                _write(record.image, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), _JPEG_QUALITY)
                _write(record.mask, polyp, _MASK_JPEG_QUALITY)
                _write(record.overlay, overlay)
                records.append(record)
                index += 1

    manifest["complete"] = True
    manifest["patients"] = {str(k): patients_per_centre[k] for k in centres}
    manifest["total"] = len(records)
    _write_manifest(out, manifest)
    return records


def _write_manifest(out: Path, manifest: dict) -> None:
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_size(size: tuple[int, int]) -> None:
    if not isinstance(size, (tuple, list)) or len(size) != 2 or not all(_is_int(s) for s in size):
        raise ValueError(f"size must be (width, height) integers, got {size!r}")
    if min(size) < MIN_SIDE:
        raise ValueError(
            f"size {size[0]}x{size[1]} is too small: both sides must be at least {MIN_SIDE} px"
        )


def _check_centres(centres: Sequence[int]) -> tuple[int, ...]:
    result = tuple(centres)
    valid = ", ".join(str(k) for k in POLYPGEN_CENTRE_SIZES)
    if not result:
        raise ValueError(f"centres is empty; valid centres: {valid}")
    for k in result:
        if k not in POLYPGEN_CENTRE_SIZES or isinstance(k, bool):
            raise ValueError(f"unknown centre {k!r}; valid centres: {valid}")
    if len(set(result)) != len(result):
        raise ValueError(f"centres has duplicates: {list(result)}")
    return result


def _prepare_output(out: Path, overwrite: bool) -> None:
    manifest = out / MANIFEST_NAME
    existing = [out / f"data_C{k}" for k in POLYPGEN_CENTRE_SIZES if (out / f"data_C{k}").exists()]
    if manifest.exists():
        existing.append(manifest)
    if not existing:
        return
    # A stale centre folder would silently join the new dataset when the loader indexes `out`.
    if not manifest.exists():
        raise FileExistsError(
            f"{out} already holds {existing[0].name} but no {MANIFEST_NAME}: not a synthetic "
            "dataset, refusing to write into or delete it"
        )
    if not overwrite:
        raise FileExistsError(
            f"{out} already holds a synthetic dataset ({existing[0].name}); "
            "pass overwrite=True to replace it"
        )
    for path in existing:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def _write(path: Path, image: np.ndarray, jpeg_quality: int | None = None) -> None:
    params = [] if jpeg_quality is None else [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
    if not cv2.imwrite(str(path), image, params):
        raise OSError(f"could not write {path}")


def _rng(seed: int, centre: int, tag: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, centre, tag, index]))


def _patient_sizes(seed: int, centre: int, n: int) -> list[int]:
    """Splits ``n`` frames into patients of 2..10 frames (1 only when ``n == 1``)."""
    rng = _rng(seed, centre, _TAG_PARTITION, 0)
    sizes: list[int] = []
    left = n
    while left > 0:
        take = int(rng.integers(2, 11))
        if take >= left:
            take = left
        elif left - take == 1:
            # Never leave a single frame behind for the last patient.
            take = take + 1 if take < 10 else take - 1
        sizes.append(take)
        left -= take
    return sizes


def _patient_style(seed: int, centre: int, patient: int) -> _PatientStyle:
    rng = _rng(seed, centre, _TAG_PATIENT, patient)
    tint = np.array(
        [rng.uniform(0.92, 1.08), rng.uniform(0.78, 1.2), rng.uniform(0.78, 1.25)],
        dtype=np.float32,
    )
    brightness = rng.uniform(0.72, 1.12)
    return _PatientStyle(
        colour=_BASE_MUCOSA_RGB * tint * np.float32(brightness),
        light=(float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.3, 0.7))),
        vignette=float(rng.uniform(0.4, 0.85)),
    )


def _render(
    seed: int, centre: int, index: int, style: _PatientStyle, width: int, height: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Renders one frame: RGB uint8 image, polyp mask and overlay mask (both uint8 0/255)."""
    rng = _rng(seed, centre, _TAG_FRAME, index)
    image = _mucosa(rng, style, width, height)
    polyp, polyp_centres = _draw_polyps(rng, image, style)
    rgb = np.clip(image, 0, 255).astype(np.uint8)
    _draw_speculars(rng, rgb, polyp_centres)
    overlay = _OVERLAYS[centre](rng, rgb)
    polyp[overlay > 0] = 0
    return rgb, polyp * np.uint8(255), overlay * np.uint8(255)


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int], channels: int = 1
) -> np.ndarray:
    grid = rng.standard_normal((cells[0], cells[1], channels)).astype(np.float32)
    smooth = cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return smooth.reshape(shape[0], shape[1], channels)


def _mucosa(rng: np.random.Generator, style: _PatientStyle, width: int, height: int) -> np.ndarray:
    """Float32 RGB mucosa with texture, folds, lumen and vignetting, full size."""
    k = min(1.0, _LOW_RES_MAX_SIDE / max(width, height))
    lw, lh = max(8, round(width * k)), max(8, round(height * k))
    unit = min(lw, lh)
    ys, xs = np.mgrid[0:lh, 0:lw].astype(np.float32)

    shade = 1.0 + 0.12 * _smooth_noise(rng, (lh, lw), (3, 4))[..., 0]
    shade += 0.05 * _smooth_noise(rng, (lh, lw), (lh // 10 + 2, lw // 10 + 2))[..., 0]
    chroma = 1.0 + 0.06 * _smooth_noise(rng, (lh, lw), (3, 4), channels=3)

    # Folds: dark curved bands with a lit rim on the side facing the light.
    lx = (style.light[0] + rng.uniform(-0.05, 0.05)) * lw
    ly = (style.light[1] + rng.uniform(-0.05, 0.05)) * lh
    folds = np.zeros((lh, lw), np.float32)
    rims = np.zeros((lh, lw), np.float32)
    for _ in range(int(rng.integers(2, 6))):
        cx, cy = rng.uniform(-0.2, 1.2) * lw, rng.uniform(-0.2, 1.2) * lh
        axes = (round(rng.uniform(0.3, 1.0) * unit), round(rng.uniform(0.15, 0.6) * unit))
        angle, start = rng.uniform(0, 180), rng.uniform(0, 360)
        end = start + rng.uniform(50, 160)
        thick = max(1, round(rng.uniform(0.035, 0.08) * unit))
        cv2.ellipse(folds, (round(cx), round(cy)), axes, angle, start, end, 1.0, thick)
        towards_light = np.array([lx - cx, ly - cy])
        towards_light *= thick / (np.linalg.norm(towards_light) + 1e-6)
        rim_centre = (round(cx + towards_light[0]), round(cy + towards_light[1]))
        cv2.ellipse(rims, rim_centre, axes, angle, start, end, 1.0, max(1, thick // 2))
    sigma = 0.025 * unit + 0.5
    shade *= 1.0 - 0.35 * np.minimum(cv2.GaussianBlur(folds, (0, 0), sigma), 1.0)
    shade *= 1.0 + 0.2 * np.minimum(cv2.GaussianBlur(rims, (0, 0), sigma), 1.0)

    if rng.random() < 0.7:  # the dark lumen, away from the lighting centre
        mx, my = rng.uniform(0.15, 0.85) * lw, rng.uniform(0.15, 0.85) * lh
        s = rng.uniform(0.08, 0.18) * unit
        shade *= 1.0 - 0.75 * np.exp(-((xs - mx) ** 2 + (ys - my) ** 2) / (2 * s * s))

    corner = max(lx, lw - lx) ** 2 + max(ly, lh - ly) ** 2
    shade *= np.clip(1.0 - style.vignette * ((xs - lx) ** 2 + (ys - ly) ** 2) / corner, 0.1, 1.0)

    field = shade[..., None] * chroma * style.colour
    return cv2.resize(field, (width, height), interpolation=cv2.INTER_LINEAR)


def _draw_polyps(
    rng: np.random.Generator, image: np.ndarray, style: _PatientStyle
) -> tuple[np.ndarray, list[tuple[float, float, float]]]:
    """Blends 0-3 polyps into ``image`` in place; returns the mask (0/1) and (x, y, radius)."""
    height, width = image.shape[:2]
    unit = min(width, height)
    mask = np.zeros((height, width), np.uint8)
    placed: list[tuple[float, float, float]] = []
    theta = np.linspace(0.0, 2 * np.pi, 64, endpoint=False)
    for _ in range(int(rng.choice(4, p=_POLYP_COUNT_P))):
        cx, cy = rng.uniform(0.25, 0.75) * width, rng.uniform(0.25, 0.75) * height
        radius = max(2.0, rng.uniform(0.06, 0.18) * unit)
        aspect, rot = rng.uniform(0.65, 1.0), rng.uniform(0.0, np.pi)
        wobble = 1.0
        for harmonic in (2, 3, 5):
            wobble = wobble + rng.uniform(0.0, 0.12 / harmonic * 2) * np.cos(
                harmonic * theta + rng.uniform(0, 2 * np.pi)
            )
        px, py = radius * wobble * np.cos(theta), radius * aspect * wobble * np.sin(theta)
        cr, sr = np.cos(rot), np.sin(rot)
        pts = np.stack([cx + cr * px - sr * py, cy + sr * px + cr * py], axis=1)
        x0, y0 = np.floor(pts.min(axis=0)).astype(int) - 2
        x1, y1 = np.ceil(pts.max(axis=0)).astype(int) + 3
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        local = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(local, [np.round(pts - (x0, y0)).astype(np.int32)], 1)
        mask[y0:y1, x0:x1] |= local

        # Dome shading lit from the patient's lighting centre, slightly redder than mucosa.
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dx, dy = xx - cx, yy - cy
        u, v = (cr * dx + sr * dy) / radius, (-sr * dx + cr * dy) / (radius * aspect)
        dome = np.sqrt(np.clip(1.0 - (u * u + v * v) / 1.3, 0.0, 1.0))
        lx, ly = style.light[0] * width - cx, style.light[1] * height - cy
        norm = np.hypot(lx, ly) + 1e-6
        lit = np.clip(1.0 + 0.25 * (dx * lx + dy * ly) / (norm * radius), 0.7, 1.3)
        gain = (0.8 + 0.45 * dome) * lit
        tint = np.array([1.12, 0.88, 0.9], np.float32) * np.float32(rng.uniform(0.95, 1.08))
        alpha = cv2.GaussianBlur(local.astype(np.float32), (0, 0), 0.02 * radius + 0.5)
        crop = image[y0:y1, x0:x1]
        crop += alpha[..., None] * (crop * tint * gain[..., None] - crop)
        placed.append((cx, cy, radius))
    return mask, placed


def _draw_speculars(
    rng: np.random.Generator, rgb: np.ndarray, polyps: list[tuple[float, float, float]]
) -> None:
    height, width = rgb.shape[:2]
    unit = min(width, height)
    for _ in range(int(rng.integers(3, 14))):
        if polyps and rng.random() < 0.5:
            cx, cy, r = polyps[int(rng.integers(len(polyps)))]
            x, y = cx + rng.uniform(-0.6, 0.6) * r, cy + rng.uniform(-0.6, 0.6) * r
        else:
            x, y = rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height
        a = rng.uniform(0.003, 0.012) * unit
        b = a * rng.uniform(0.4, 1.0)
        angle = rng.uniform(0, 180)
        if a < 1.0:  # below one pixel even the smallest ellipse would be a 3x3 block
            rgb[min(round(y), height - 1), min(round(x), width - 1)] = (255, 255, 252)
            continue
        axes = (round(a), max(1, round(b)))
        cv2.ellipse(rgb, (round(x), round(y)), axes, angle, 0, 360, (255, 255, 252), -1)


# --- overlays ---------------------------------------------------------------------------------
# Each style draws on the RGB frame in place and returns its mask (uint8 0/1). Sizes scale with
# the shorter side so that the style stays visible down to 32 px.


def _font_scale(text_height: float) -> float:
    return text_height / cv2.getTextSize("0", _FONT, 1.0, 1)[0][1]


def _put_text(
    rgb: np.ndarray,
    mask: np.ndarray,
    text: str,
    org: tuple[int, int],
    height: float,
    colour: tuple[int, int, int],
) -> tuple[int, int]:
    """Draws text with its baseline-left at ``org``, marks its padded box; returns its size."""
    scale = _font_scale(height)
    thickness = max(1, round(height / 10))
    (tw, th), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    cv2.putText(rgb, text, org, _FONT, scale, colour, thickness, cv2.LINE_AA)
    pad = max(1, round(height * 0.2))
    x, y = org
    cv2.rectangle(mask, (x - pad, y - th - pad), (x + tw + pad, y + baseline + pad), 1, -1)
    return tw, th


def _date(rng: np.random.Generator, sep: str = "/") -> str:
    y, m, d = int(rng.integers(2012, 2022)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    return f"{y:04d}{sep}{m:02d}{sep}{d:02d}"


def _clock(rng: np.random.Generator) -> str:
    return f"{rng.integers(7, 19):02d}:{rng.integers(0, 60):02d}:{rng.integers(0, 60):02d}"


def _word(rng: np.random.Generator, length: int) -> str:
    letters = "ABCDEFGHKLMNPRSTUVWXYZ0123456789"
    return "".join(letters[i] for i in rng.integers(0, len(letters), length))


def _overlay_octagon(rng: np.random.Generator, rgb: np.ndarray) -> np.ndarray:
    """C1: black octagonal border with cut corners and a white burnt-in date and time."""
    height, width = rgb.shape[:2]
    unit = min(width, height)
    cut = rng.uniform(0.14, 0.22) * unit
    m = rng.uniform(0.0, 0.025) * unit
    r, b = width - 1 - m, height - 1 - m
    octagon = np.round(
        [(m + cut, m), (r - cut, m), (r, m + cut), (r, b - cut),
         (r - cut, b), (m + cut, b), (m, b - cut), (m, m + cut)]
    ).astype(np.int32)  # fmt: skip
    mask = np.ones((height, width), np.uint8)
    cv2.fillPoly(mask, [octagon], 0)
    rgb[mask > 0] = (4, 4, 4)
    text_h = rng.uniform(0.032, 0.042) * unit
    x = round(m + rng.uniform(0.02, 0.05) * unit)
    y = round(m + cut + rng.uniform(0.04, 0.08) * unit)
    _put_text(rgb, mask, _date(rng), (x, y), text_h, (235, 235, 235))
    _put_text(rgb, mask, _clock(rng), (x, round(y + 1.8 * text_h)), text_h, (235, 235, 235))
    return mask


def _overlay_scope_thumbnail(rng: np.random.Generator, rgb: np.ndarray) -> np.ndarray:
    """C2: bordered box in the lower-left corner showing the scope's position in the colon."""
    height, width = rgb.shape[:2]
    unit = min(width, height)
    bw = rng.uniform(0.22, 0.28) * unit
    bh = bw * rng.uniform(0.95, 1.15)
    x0 = round(rng.uniform(0.01, 0.04) * unit)
    y1 = round(height - 1 - rng.uniform(0.01, 0.04) * unit)
    x1, y0 = round(x0 + bw), round(y1 - bh)
    # Drawn on its own canvas so that nothing spills outside the box (and its mask).
    box = np.empty((y1 - y0 + 1, x1 - x0 + 1, 3), np.uint8)
    box[:] = (24, 26, 30)

    def at(fx: float, fy: float) -> tuple[float, float]:
        return fx * bw, fy * bh

    # Colon outline (an inverted U) and the scope curve entering from the bottom.
    colon = (
        np.array([at(0.2, 0.9), at(0.18, 0.25), at(0.5, 0.15), at(0.82, 0.25), at(0.8, 0.9)])
        + rng.uniform(-0.03, 0.03, (5, 2)) * bw
    )
    cv2.polylines(
        box, [np.round(colon).astype(np.int32)], False, (150, 110, 100), max(1, round(bw / 12))
    )
    n_scope = int(rng.integers(2, 5))  # how far the scope has advanced
    scope = np.concatenate([[at(0.55, 1.0)], colon[::-1][:n_scope]])
    scope = scope + rng.uniform(-0.02, 0.02, scope.shape) * bw
    cv2.polylines(
        box, [np.round(scope).astype(np.int32)], False, (90, 230, 90), max(1, round(bw / 25))
    )
    tip = np.round(scope[-1]).astype(int)
    cv2.circle(box, (int(tip[0]), int(tip[1])), max(1, round(bw / 18)), (250, 230, 60), -1)
    border = max(1, round(unit / 200))
    cv2.rectangle(box, (0, 0), (box.shape[1] - 1, box.shape[0] - 1), (200, 200, 200), border)
    # The box is clipped at the frame edge like any burnt-in graphic.
    bx1, by1 = min(x1 + 1, width), min(y1 + 1, height)
    bx0, by0 = max(x0, 0), max(y0, 0)
    rgb[by0:by1, bx0:bx1] = box[by0 - y0 : by1 - y0, bx0 - x0 : bx1 - x0]
    mask = np.zeros((height, width), np.uint8)
    mask[by0:by1, bx0:bx1] = 1
    return mask


def _overlay_side_bars(rng: np.random.Generator, rgb: np.ndarray) -> np.ndarray:
    """C3: a wide black panel on the left and a narrow one on the right, with text columns."""
    height, width = rgb.shape[:2]
    unit = min(width, height)
    mask = np.zeros((height, width), np.uint8)
    left = round(rng.uniform(0.17, 0.23) * width)
    right = max(2, round(rng.uniform(0.05, 0.08) * width))
    mask[:, :left] = 1
    mask[:, width - right :] = 1
    rgb[mask > 0] = (2, 2, 2)
    for x0, bar in ((0, left), (width - right, right)):
        text_h = min(rng.uniform(0.03, 0.038) * unit, bar / 5.0)
        pitch = text_h * rng.uniform(2.0, 2.6)
        y = rng.uniform(0.05, 0.12) * height + text_h
        colour = (230, 230, 230) if rng.random() < 0.6 else (120, 230, 230)
        bottom = height * rng.uniform(0.75, 0.95)
        while y < bottom:
            word = _word(rng, int(rng.integers(3, 6)))
            scale = _font_scale(text_h)
            tw = cv2.getTextSize(word, _FONT, scale, max(1, round(text_h / 10)))[0][0]
            if tw > bar * 0.9:
                word = word[: max(1, int(len(word) * bar * 0.9 / tw))]
            x = round(x0 + rng.uniform(0.04, 0.1) * bar)
            _put_text(rgb, mask, word, (x, round(y)), text_h, colour)
            y += pitch
    return mask


def _overlay_miniature(rng: np.random.Generator, rgb: np.ndarray) -> np.ndarray:
    """C4: a miniature copy of the frame with a thin border in the top-right corner."""
    height, width = rgb.shape[:2]
    unit = min(width, height)
    mw = max(4, round(rng.uniform(0.22, 0.3) * width))
    mh = max(3, round(mw * height / width))
    margin = rng.uniform(0.01, 0.035) * unit
    x1, y0 = round(width - margin), round(margin)
    x0, y1 = x1 - mw, y0 + mh
    mini = cv2.resize(rgb, (mw, mh), interpolation=cv2.INTER_AREA)
    # Bordered on the copy: a thick cv2 rectangle straddles its outline and would leak out.
    border = max(1, round(unit / 240))
    cv2.rectangle(mini, (0, 0), (mw - 1, mh - 1), (210, 210, 210), border)
    rgb[y0:y1, x0:x1] = mini
    mask = np.zeros((height, width), np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def _overlay_status_bar(rng: np.random.Generator, rgb: np.ndarray) -> np.ndarray:
    """C5: a blue or green status bar along the bottom with white text."""
    height, width = rgb.shape[:2]
    unit = min(width, height)
    bar = max(3, round(rng.uniform(0.08, 0.11) * height))
    base = (28, 70, 190) if rng.random() < 0.5 else (20, 150, 90)
    colour = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in base)
    mask = np.zeros((height, width), np.uint8)
    mask[height - bar :] = 1
    rgb[height - bar :] = colour
    text_h = min(0.55 * bar, 0.045 * unit)
    y = round(height - bar / 2 + text_h / 2)
    x = round(rng.uniform(0.02, 0.06) * width)
    text = f"REC {_clock(rng)}  {_word(rng, 4)}  F{rng.integers(1, 10)}"
    _put_text(rgb, mask, text, (x, y), text_h, (245, 245, 245))
    return mask


def _overlay_circle(rng: np.random.Generator, rgb: np.ndarray) -> np.ndarray:
    """C6: black outside a circular field of view, with white text in the top-left corner."""
    height, width = rgb.shape[:2]
    unit = min(width, height)
    cx = round(width / 2 + rng.uniform(-0.02, 0.02) * unit)
    cy = round(height / 2 + rng.uniform(-0.02, 0.02) * unit)
    radius = round(rng.uniform(0.5, 0.56) * unit)
    mask = np.ones((height, width), np.uint8)
    cv2.circle(mask, (cx, cy), radius, 0, -1)
    rgb[mask > 0] = (0, 0, 0)
    text_h = rng.uniform(0.03, 0.04) * unit
    x, y = round(rng.uniform(0.015, 0.03) * unit), round(rng.uniform(0.02, 0.04) * unit + text_h)
    _put_text(rgb, mask, f"ID {_word(rng, 6)}", (x, y), text_h, (240, 240, 240))
    _put_text(rgb, mask, _date(rng, "."), (x, round(y + 1.8 * text_h)), text_h, (240, 240, 240))
    return mask


_OVERLAYS: dict[int, Callable[[np.random.Generator, np.ndarray], np.ndarray]] = {
    1: _overlay_octagon,
    2: _overlay_scope_thumbnail,
    3: _overlay_side_bars,
    4: _overlay_miniature,
    5: _overlay_status_bar,
    6: _overlay_circle,
}
