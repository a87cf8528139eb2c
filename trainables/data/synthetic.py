"""Synthetic PolypGen-like dataset generator.

Writes colonoscopy-like frames in a PolypGen single-frame layout so that the real loader is what
tests, the demo and the benchmarks exercise. Two namings are available.

``naming="camsweep"`` — camsweep's own names, with the patient in every name::

    out/data_C{k}/images_C{k}/{stem}.jpg            RGB frame (JPEG)
    out/data_C{k}/masks_C{k}/{stem}_mask.jpg        polyp mask, 0/255 grayscale JPEG
    out/data_C{k}/overlays_C{k}/{stem}_overlay.png  extra-anatomical overlay mask, 0/255 PNG
    out/synth.json                                  generator arguments and per-centre counts

with ``stem = C{k}_P{patient:03d}_{frame:04d}`` (``frame`` counts the patient's frames from 0).

``naming="polypgen"`` (the default, so tests and the demo read what the real release looks
like) — a tree shaped like the public release ``PolypGen2021_MultiCenterData_v3``
(``out`` plays the role of that folder). With ``i`` the frame's index within its centre (from 0,
patient by patient) and ``p`` its patient number (from 1), the image names are::

    C1  {100+p:03d}OLC1_100H{i+1:04d}.jpg     OLC1 for odd p, OLCV1 for even p; patient "{100+p}"
    C2  EndoCV2021_{1000+i:06d}.jpg
    C3  C3_EndoCV2021_{n:05d}.jpg             n = max(1, 489 - count // 2) + i
    C4  {p}_endocv2021_positive_{i+1}.jpg     patient "{p}"
    C5  EndoCV2021_C5_{50000000+i:08d}.jpg
    C6  EndoCV2021_C6_{100000+i:07d}.jpg

Masks are ``data_C{k}/masks_C{k}/<stem>_mask.jpg`` and overlays (camsweep's CAM ground truth, not
in the release) ``data_C{k}/overlays_C{k}/<stem>_overlay.png``, except for the release's quirk in
C3: frame 489 is the image ``C3_EndoCV2021_00489_.jpg`` with the mask
``C3_EndoCV2021_00489_mask.jpg`` (and overlay ``C3_EndoCV2021_00489_overlay.png``). C2, C3, C5
and C6 do not name patients; ``out/polypgen-patients.json`` holds their per-frame patient ids
("1", "2", ...) ordered by frame number, in the format of the authors' lists. As in the release,
C1 and C2 masks are mostly 3-channel JPEGs (241/256 and 211/301 of the frames, chosen by seeded
draw), the other masks single-channel; about one patient in four per centre (at least one when a
centre has 4 or more) is written at a second size of 3/4 of each side (at least 32 px). The release's
other content, which loaders must ignore, is imitated with small deterministic files::

    out/data_C{k}/bbox_C{k}/<stem>.txt              "polyp x1 y1 x2 y2" (empty: no polyp)
    out/data_C{k}/bbox_image_C{k}/<stem>.jpg        the frame with its box drawn (C6: bbox_images_C6)
    out/sequenceData/positive/seq1/{images,masks,bbox,bbox_image}_seq1/   two frames
    out/sequenceData/negativeOnly/seq1_neg/         two frames without polyps or masks
    out/imagesAll_positive/                         copies of up to 3 frames with polyps per centre
    out/dataDetails_PolypGen_SingleFrames/dataDetails_C{k}.csv   k = 1..5 (the release has no C6)
    out/readme.md, readme.html, license.txt, fileStructure_all.txt
    .DS_Store in out, data_C1, data_C1/images_C1 and data_C2/masks_C2

Patients (their number and frames), rendering, overlays and determinism do not depend on the
naming, except that second-size frames are rendered at their own size.

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

from trainables.data.patients import LIST_CENTRES, ROOT_LISTS_NAME

POLYPGEN_CENTRE_SIZES: dict[int, int] = {1: 256, 2: 301, 3: 457, 4: 227, 5: 208, 6: 88}

MIN_SIDE = 32
FORMAT_VERSION = 1
MANIFEST_NAME = "synth.json"
NAMINGS = ("camsweep", "polypgen")
# What a polypgen-named dataset holds at `out` besides data_C<k> and synth.json.
_POLYPGEN_EXTRAS = (
    ROOT_LISTS_NAME,
    "sequenceData",
    "imagesAll_positive",
    "dataDetails_PolypGen_SingleFrames",
    "readme.md",
    "readme.html",
    "license.txt",
    "fileStructure_all.txt",
    ".DS_Store",
)

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

# polypgen naming: masks stored as 3-channel JPEGs in the release (C1: 241 of 256, C2: 211 of 301).
_RGB_MASK_FRACTION = {1: (241, 256), 2: (211, 301)}
_C3_QUIRK = 489  # the C3 frame whose image name has a trailing underscore
_SECOND_SIZE_FRACTION = 0.75
_DS_STORE = b"\x00\x00\x00\x01Bud1" + bytes(26)  # junk of the kind macOS leaves behind

# Tags that keep the independent random streams of one (seed, centre) apart.
_TAG_PARTITION = 0
_TAG_PATIENT = 1
_TAG_FRAME = 2
_TAG_NAMING = 3
_TAG_SEQUENCE = 4
_TAG_NEGATIVE = 5


@dataclass(frozen=True)
class SynthRecord:
    """One generated frame.

    Attributes:
        image: The RGB frame (JPEG).
        mask: The polyp mask (0/255 JPEG), without overlay pixels.
        overlay: The extra-anatomical overlay mask (0/255 PNG).
        centre: The centre, 1..6.
        patient: The patient id, unique within the centre: ``P{n:03d}`` for camsweep naming; for
            polypgen naming the 3-digit name prefix in C1 (``"101"``), the leading number in C4
            (``"3"``) and ``str(n)`` in C2, C3, C5 and C6 (as in ``polypgen-patients.json``).
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
    naming: str = "polypgen",
) -> list[SynthRecord]:
    """Generates a synthetic PolypGen-like dataset under ``out``.

    Args:
        out: Output root; created if missing.
        per_centre: Number of frames per centre. Mutually exclusive with ``scale``.
        scale: Fraction of the real PolypGen centre sizes (``POLYPGEN_CENTRE_SIZES``), at least
            one frame per centre; 1.0 when neither ``per_centre`` nor ``scale`` is given.
        size: Frame size as (width, height), each side at least 32. With polypgen naming, the
            main size; a minority of patients is written at 3/4 of it.
        seed: Non-negative seed; the same arguments give byte-identical files.
        centres: Centres to generate, a subset of 1..6.
        overwrite: Replace a synthetic dataset already in ``out`` (recognised by its
            ``synth.json``), whatever its naming. Folders of anything else are never deleted.
        naming: ``"camsweep"`` (names ``C{k}_P{nnn}_{frame}``) or ``"polypgen"`` (a tree shaped
            like the public release, see the module docstring).

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
    if not isinstance(naming, str) or naming not in NAMINGS:
        valid = ", ".join(repr(n) for n in NAMINGS)
        raise ValueError(f"unknown naming {naming!r}; valid namings: {valid}")
    width, height, seed = int(size[0]), int(size[1]), int(seed)
    per_centre = None if per_centre is None else int(per_centre)
    out = Path(out)

    counts = {
        k: per_centre
        if per_centre is not None
        else max(1, round((1.0 if scale is None else scale) * POLYPGEN_CENTRE_SIZES[k]))
        for k in centres
    }
    partitions = {k: _patient_sizes(seed, k, counts[k]) for k in centres}
    if naming == "polypgen" and 1 in centres and len(partitions[1]) > 899:
        raise ValueError(
            f"polypgen naming numbers C1 patients 101..999, but C1 would have "
            f"{len(partitions[1])} patients ({counts[1]} frames); use fewer frames"
        )
    _prepare_output(out, overwrite)
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
        "naming": naming,
    }
    # Written first so that an interrupted run is still recognised (and replaced) by
    # overwrite=True; "complete" tells readers whether every file is there.
    out.mkdir(parents=True, exist_ok=True)
    _write_manifest(out, manifest)
    records: list[SynthRecord] = []
    positives: list[Path] = []  # polypgen naming: frames copied to imagesAll_positive
    for centre in centres:
        centre_dir = out / f"data_C{centre}"
        image_dir = centre_dir / f"images_C{centre}"
        mask_dir = centre_dir / f"masks_C{centre}"
        overlay_dir = centre_dir / f"overlays_C{centre}"
        folders = [image_dir, mask_dir, overlay_dir]
        sizes = partitions[centre]
        plan = None
        if naming == "polypgen":
            plan = _polypgen_plan(seed, centre, sizes, (width, height))
            box_dir = centre_dir / f"bbox_C{centre}"
            box_image_dir = centre_dir / (
                "bbox_images_C6" if centre == 6 else f"bbox_image_C{centre}"
            )
            folders += [box_dir, box_image_dir]
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        index = 0
        centre_positives = 0
        for patient_no, n_frames in enumerate(sizes, start=1):
            style = _patient_style(seed, centre, patient_no)
            if plan is None or patient_no not in plan.second_size_patients:
                frame_w, frame_h = width, height
            else:
                frame_w, frame_h = plan.second_size
            for frame in range(n_frames):
                rgb, polyp, overlay = _render(seed, centre, index, style, frame_w, frame_h)
                if plan is None:
                    patient = f"P{patient_no:03d}"
                    stem = f"C{centre}_{patient}_{frame:04d}"
                    names = (f"{stem}.jpg", f"{stem}_mask.jpg", f"{stem}_overlay.png")
                else:
                    patient, names = _polypgen_names(centre, index, patient_no, counts[centre])
                record = SynthRecord(
                    image=image_dir / names[0],
                    mask=mask_dir / names[1],
                    overlay=overlay_dir / names[2],
                    centre=centre,
                    patient=patient,
                )
                bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
                _write(record.image, bgr, _JPEG_QUALITY)
                if plan is not None and index in plan.rgb_masks:
                    _write(record.mask, cv2.merge([polyp, polyp, polyp]), _MASK_JPEG_QUALITY)
                else:
                    _write(record.mask, polyp, _MASK_JPEG_QUALITY)
                _write(record.overlay, overlay)
                if plan is not None:
                    stem = record.image.name.removesuffix(".jpg")
                    _write_box(box_dir / f"{stem}.txt", box_image_dir / f"{stem}.jpg", bgr, polyp)
                    if centre_positives < 3 and polyp.any():
                        positives.append(record.image)
                        centre_positives += 1
                records.append(record)
                index += 1

    if naming == "polypgen":
        _write_polypgen_extras(out, records, positives, seed, (width, height), centres)
    manifest["complete"] = True
    manifest["patients"] = {str(k): len(partitions[k]) for k in centres}
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
    names = [f"data_C{k}" for k in POLYPGEN_CENTRE_SIZES] + list(_POLYPGEN_EXTRAS)
    existing = [out / n for n in names if (out / n).exists() or (out / n).is_symlink()]
    if not manifest.exists():
        # A stale centre folder would silently join the new dataset when the loader indexes
        # `out`, and whatever sits under the generator's names would be deleted by a later
        # overwrite; only macOS's .DS_Store junk is not worth refusing for.
        foreign = [p for p in existing if p.name != ".DS_Store"]
        if foreign:
            raise FileExistsError(
                f"{out} already holds {foreign[0].name} but no {MANIFEST_NAME}: not a synthetic "
                "dataset, refusing to write into or delete it"
            )
        return
    if not overwrite:
        shown = existing[0].name if existing else MANIFEST_NAME
        raise FileExistsError(
            f"{out} already holds a synthetic dataset ({shown}); pass overwrite=True to replace it"
        )
    # Everything either naming writes goes, so that no stale file joins the new dataset.
    for path in [*existing, manifest]:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


# --- polypgen naming --------------------------------------------------------------------------


@dataclass(frozen=True)
class _PolypgenPlan:
    second_size: tuple[int, int]  # (width, height) of the minority of patients below
    second_size_patients: frozenset[int]  # patient numbers (from 1)
    rgb_masks: frozenset[int]  # frame indices within the centre with a 3-channel mask


def _polypgen_plan(
    seed: int, centre: int, sizes: list[int], size: tuple[int, int]
) -> _PolypgenPlan:
    """Which patients get the second size and which frames a 3-channel mask (seeded draws)."""
    n_patients, count = len(sizes), sum(sizes)
    n_second = max(1, round(n_patients / 4)) if n_patients >= 4 else 0
    draw = _rng(seed, centre, _TAG_NAMING, 0).choice(n_patients, n_second, replace=False)
    rgb: frozenset[int] = frozenset()
    if centre in _RGB_MASK_FRACTION:
        num, den = _RGB_MASK_FRACTION[centre]
        n_rgb = round(count * num / den)
        if count >= 2:  # both kinds whenever there is room for both, as in the release
            n_rgb = min(max(n_rgb, 1), count - 1)
        order = _rng(seed, centre, _TAG_NAMING, 1).permutation(count)
        rgb = frozenset(int(i) for i in order[:n_rgb])
    second = (
        max(MIN_SIDE, round(size[0] * _SECOND_SIZE_FRACTION)),
        max(MIN_SIDE, round(size[1] * _SECOND_SIZE_FRACTION)),
    )
    return _PolypgenPlan(second, frozenset(int(i) + 1 for i in draw), rgb)


def _frame_number(centre: int, index: int, count: int) -> int:
    """The number in a polypgen frame name; per-frame patient lists are ordered by it."""
    if centre == 2:
        return 1000 + index
    if centre == 3:
        return max(1, _C3_QUIRK - count // 2) + index
    if centre == 5:
        return 50_000_000 + index
    if centre == 6:
        return 100_000 + index
    return index + 1  # C1 and C4: a running count from 1


def _polypgen_names(
    centre: int, index: int, patient_no: int, count: int
) -> tuple[str, tuple[str, str, str]]:
    """The patient id and the (image, mask, overlay) file names of one polypgen-named frame."""
    n = _frame_number(centre, index, count)
    patient = str(patient_no)
    if centre == 1:
        patient = f"{100 + patient_no:03d}"
        stem = f"{patient}{'OLC1' if patient_no % 2 else 'OLCV1'}_100H{n:04d}"
    elif centre == 2:
        stem = f"EndoCV2021_{n:06d}"
    elif centre == 3:
        stem = f"C3_EndoCV2021_{n:05d}"
        if n == _C3_QUIRK:  # the release's image name has a stray underscore, its mask not
            return patient, (f"{stem}_.jpg", f"{stem}_mask.jpg", f"{stem}_overlay.png")
    elif centre == 4:
        stem = f"{patient_no}_endocv2021_positive_{n}"
    elif centre == 5:
        stem = f"EndoCV2021_C5_{n:08d}"
    else:
        stem = f"EndoCV2021_C6_{n:07d}"
    return patient, (f"{stem}.jpg", f"{stem}_mask.jpg", f"{stem}_overlay.png")


def _write_box(text_path: Path, image_path: Path, bgr: np.ndarray, polyp: np.ndarray) -> None:
    """The release's bounding-box files: ``polyp x1 y1 x2 y2`` and the frame with the box."""
    ys, xs = np.nonzero(polyp)
    if xs.size == 0:
        text_path.write_text("")
        _write(image_path, bgr, _JPEG_QUALITY)
        return
    x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    text_path.write_text(f"polyp {x1} {y1} {x2} {y2}\n")
    boxed = bgr.copy()
    cv2.rectangle(boxed, (x1, y1), (x2, y2), (0, 255, 0), max(1, round(min(bgr.shape[:2]) / 150)))
    _write(image_path, boxed, _JPEG_QUALITY)


def _write_polypgen_extras(
    out: Path,
    records: list[SynthRecord],
    positives: list[Path],
    seed: int,
    size: tuple[int, int],
    centres: tuple[int, ...],
) -> None:
    """Everything of the release besides the single frames: content loaders must ignore."""
    lists = {
        f"C{k}": [r.patient for r in records if r.centre == k] for k in centres if k in LIST_CENTRES
    }
    about = (
        "Synthetic patient lists written by camsweep's generator, in the format of the shipped "
        "authors' lists: one patient id per frame, in the order of the frame numbers."
    )
    text = json.dumps({"about": about, "centres": lists}, indent=1)
    (out / ROOT_LISTS_NAME).write_text(text + "\n")

    # Sequences: two positive frames with masks and boxes, two negative frames without masks.
    width, height = size
    style = _patient_style(seed, centres[0], 0)  # patient numbers start at 1: unused elsewhere
    seq = out / "sequenceData" / "positive" / "seq1"
    folders = {kind: seq / f"{kind}_seq1" for kind in ("images", "masks", "bbox", "bbox_image")}
    negative = out / "sequenceData" / "negativeOnly" / "seq1_neg"
    for folder in [*folders.values(), negative]:
        folder.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        rgb, polyp, _ = _render(seed, centres[0], i, style, width, height, tag=_TAG_SEQUENCE)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        name = f"seq1_{i + 1:04d}"
        _write(folders["images"] / f"{name}.jpg", bgr, _JPEG_QUALITY)
        _write(folders["masks"] / f"{name}_mask.jpg", polyp, _MASK_JPEG_QUALITY)
        _write_box(
            folders["bbox"] / f"{name}.txt", folders["bbox_image"] / f"{name}.jpg", bgr, polyp
        )
        rgb, _, _ = _render(
            seed, centres[0], i, style, width, height, tag=_TAG_NEGATIVE, polyps=False
        )
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        _write(negative / f"seq1_neg_{i + 1:04d}.jpg", bgr, _JPEG_QUALITY)

    flat = out / "imagesAll_positive"
    flat.mkdir(exist_ok=True)
    for image in positives:
        shutil.copyfile(image, flat / image.name)

    details = out / "dataDetails_PolypGen_SingleFrames"
    details.mkdir(exist_ok=True)
    for k in centres:
        if k == 6:  # the release ships no details for C6
            continue
        rows = [f"{r.image.name},C{k},{r.patient}" for r in records if r.centre == k]
        (details / f"dataDetails_C{k}.csv").write_text(
            "\n".join(["imageName,centre,patient", *rows]) + "\n"
        )

    readme = (
        "# Synthetic PolypGen-like data\n\n"
        "Written by camsweep's generator (trainables.data.synthetic) in the layout of the public "
        "release PolypGen2021_MultiCenterData_v3. No frame shows a real patient.\n"
    )
    (out / "readme.md").write_text(readme)
    (out / "readme.html").write_text(
        "<html><body><h1>Synthetic PolypGen-like data</h1><p>Written by camsweep's generator in "
        "the layout of PolypGen2021_MultiCenterData_v3. No frame shows a real patient.</p>"
        "</body></html>\n"
    )
    (out / "license.txt").write_text(
        "Synthetic data generated by camsweep; it contains no images of the PolypGen release.\n"
    )

    for folder in (
        out,
        out / "data_C1",
        out / "data_C1" / "images_C1",
        out / "data_C2" / "masks_C2",
    ):
        if folder.is_dir():
            (folder / ".DS_Store").write_bytes(_DS_STORE)

    lines = []
    for folder in sorted(p for p in out.rglob("*") if p.is_dir()):
        n_files = sum(1 for p in folder.iterdir() if p.is_file())
        lines.append(f"{folder.relative_to(out).as_posix()}/  files: {n_files}")
    (out / "fileStructure_all.txt").write_text("\n".join(lines) + "\n")


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
    seed: int,
    centre: int,
    index: int,
    style: _PatientStyle,
    width: int,
    height: int,
    *,
    tag: int = _TAG_FRAME,
    polyps: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Renders one frame: RGB uint8 image, polyp mask and overlay mask (both uint8 0/255)."""
    rng = _rng(seed, centre, tag, index)
    image = _mucosa(rng, style, width, height)
    if polyps:
        polyp, polyp_centres = _draw_polyps(rng, image, style)
    else:
        polyp, polyp_centres = np.zeros((height, width), np.uint8), []
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
