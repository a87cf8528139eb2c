"""Index the PolypGen single-frame layout (or a CSV manifest) into a manifest of records.

Layout, per centre k: ``data_C{k}/images_C{k}/<stem>.jpg`` and ``data_C{k}/masks_C{k}/<stem>_mask.jpg``;
camsweep's synthetic generator adds ``data_C{k}/overlays_C{k}/<stem>_overlay.png`` (the ground truth
of the extra-anatomical content). A CSV manifest with columns ``image, mask, centre, patient``
(optional ``overlay``; relative paths are relative to the CSV's folder) overrides the layout.

Indexing only looks at names; decoding problems (corrupt files, size mismatches) are found by
:func:`trainables.data.check.check_dataset` and by the decoded cache, which both report every
problem at once.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
# Matches camsweep's synthetic names (C3_P007_0012) and any name carrying "_P<digits>_".
DEFAULT_PATIENT_PATTERN = r"_(?P<patient>[Pp]\d+)_"
MANIFEST_COLUMNS = ("image", "mask", "centre", "patient")
_CENTRE_DIR = re.compile(r"^data_C(\d+)$")


@dataclass(frozen=True)
class Record:
    """One frame: absolute paths, centre number (1-based, as PolypGen) and patient id."""

    image: Path
    mask: Path
    centre: int
    patient: str
    overlay: Path | None = None


@dataclass
class Manifest:
    """The indexed dataset, in a deterministic order (centre, then file name)."""

    root: Path
    records: list[Record]
    # True when patient ids came from names or a CSV; False when each frame is its own patient.
    patients_known: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def centres(self) -> list[int]:
        return sorted({r.centre for r in self.records})

    @property
    def has_overlays(self) -> bool:
        return bool(self.records) and all(r.overlay is not None for r in self.records)

    def to_csv(self, path: Path) -> None:
        """Writes the manifest as CSV (absolute paths) — the format `manifest:` accepts."""
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow([*MANIFEST_COLUMNS, "overlay"])
            for r in self.records:
                writer.writerow([r.image, r.mask, r.centre, r.patient, r.overlay or ""])


class DatasetError(ValueError):
    """Raised with *all* problems found, each naming the file or value at fault."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in the dataset:\n{lines}")


def patient_from_name(stem: str, pattern: re.Pattern[str]) -> str | None:
    match = pattern.search(stem)
    return match.group("patient") if match else None


def _find_mask(masks_dir: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        candidate = masks_dir / f"{stem}_mask{suffix}"
        if candidate.exists():
            return candidate
    return None


def _index_centre(
    centre_dir: Path, k: int, pattern: re.Pattern[str], problems: list[str]
) -> tuple[list[Record], bool]:
    images_dir, masks_dir = centre_dir / f"images_C{k}", centre_dir / f"masks_C{k}"
    overlays_dir = centre_dir / f"overlays_C{k}"
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            problems.append(f"{d}: missing folder")
    if not images_dir.is_dir():
        return [], True
    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        problems.append(f"{images_dir}: centre C{k} has no images")
    stems = Counter(p.stem for p in images)
    for stem, n in sorted(stems.items()):
        if n > 1:
            problems.append(f"{images_dir}: duplicate name {stem!r} ({n} files with that stem)")
    records, all_named = [], True
    for image in images:
        mask = _find_mask(masks_dir, image.stem) if masks_dir.is_dir() else None
        if mask is None and masks_dir.is_dir():
            problems.append(f"{image}: no mask ({masks_dir / (image.stem + '_mask.jpg')} missing)")
            continue
        overlay = overlays_dir / f"{image.stem}_overlay.png"
        patient = patient_from_name(image.stem, pattern)
        if patient is None:
            all_named = False
            patient = image.stem
        if mask is not None:
            records.append(Record(image, mask, k, patient, overlay if overlay.exists() else None))
    return records, all_named


def index_polypgen(
    root: Path | str,
    *,
    manifest: Path | str | None = None,
    patient_pattern: str = DEFAULT_PATIENT_PATTERN,
) -> Manifest:
    """Indexes a PolypGen-style root, or reads a CSV manifest, into a :class:`Manifest`.

    Args:
        root: dataset root holding ``data_C{k}`` folders.
        manifest: optional CSV (columns image, mask, centre, patient[, overlay]); overrides the
            folder layout entirely.
        patient_pattern: regex with a named group ``patient`` applied to image stems. Frames
            whose names do not match become their own patient (noted in ``Manifest.notes``).

    Raises:
        DatasetError: listing every structural problem (missing folders, images without masks,
            duplicate names, empty centres, bad manifest rows).
    """
    found, problems = scan_polypgen(root, manifest=manifest, patient_pattern=patient_pattern)
    if problems:
        raise DatasetError(problems)
    return found


def scan_polypgen(
    root: Path | str,
    *,
    manifest: Path | str | None = None,
    patient_pattern: str = DEFAULT_PATIENT_PATTERN,
) -> tuple[Manifest, list[str]]:
    """Like :func:`index_polypgen`, but returns the usable records *and* the problems."""
    root = Path(root).expanduser()
    if manifest is not None:
        return read_manifest_csv(Path(manifest).expanduser(), root)
    if not root.is_dir():
        return Manifest(root, []), [f"{root}: data root does not exist"]
    try:
        pattern = re.compile(patient_pattern)
    except re.error as exc:
        return Manifest(root, []), [f"patient_pattern {patient_pattern!r}: invalid regex ({exc})"]
    if "patient" not in pattern.groupindex:
        return Manifest(root, []), [
            f"patient_pattern {patient_pattern!r}: needs a named group 'patient'"
        ]
    centre_dirs = sorted(
        (int(m.group(1)), d)
        for d in root.iterdir()
        if d.is_dir() and (m := _CENTRE_DIR.match(d.name))
    )
    if not centre_dirs:
        return Manifest(root, []), [
            f"{root}: no data_C<k> centre folders (is this a PolypGen root?)"
        ]
    problems: list[str] = []
    records: list[Record] = []
    all_named = True
    for k, d in centre_dirs:
        recs, named = _index_centre(d, k, pattern, problems)
        records.extend(recs)
        all_named &= named
    names = Counter(r.image.name for r in records)
    for name, n in sorted(names.items()):
        if n > 1:
            centres = sorted(r.centre for r in records if r.image.name == name)
            problems.append(f"duplicate file name {name!r} in centres {centres}")
    notes = []
    if not all_named:
        notes.append(
            f"some image names do not match patient_pattern {patient_pattern!r}: those frames "
            "are treated as their own patient (splits cannot keep a patient's frames together)"
        )
    return Manifest(root, records, patients_known=all_named, notes=notes), problems


def read_manifest_csv(path: Path, root: Path | None = None) -> tuple[Manifest, list[str]]:
    """Reads a CSV manifest; relative paths resolve against the CSV's folder."""
    if not path.is_file():
        return Manifest(root or path.parent, []), [f"{path}: manifest file does not exist"]
    base = path.parent
    problems: list[str] = []
    records: list[Record] = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            return Manifest(base, []), [
                f"{path}: missing column(s) {missing}; need {list(MANIFEST_COLUMNS)}"
            ]
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}"
            centre_text = (row["centre"] or "").strip().upper().removeprefix("C")
            if not centre_text.isdigit():
                problems.append(f"{where}: centre {row['centre']!r} is not a centre number")
                continue
            image, mask = base / row["image"].strip(), base / row["mask"].strip()
            overlay_text = (row.get("overlay") or "").strip()
            overlay = base / overlay_text if overlay_text else None
            patient = (row["patient"] or "").strip()
            row_problems = [
                f"{where}: {kind} {p} does not exist"
                for kind, p in (("image", image), ("mask", mask), ("overlay", overlay))
                if p is not None and not p.is_file()
            ]
            if not patient:
                row_problems.append(f"{where}: empty patient")
            problems += row_problems
            if not row_problems:
                records.append(Record(image, mask, int(centre_text), patient, overlay))
    if not records and not problems:
        problems.append(f"{path}: manifest has no rows")
    names = Counter(r.image for r in records)
    problems += [f"{path}: image {p} listed {n} times" for p, n in names.items() if n > 1]
    records.sort(key=lambda r: (r.centre, r.image.name))
    return Manifest(root or base, records), problems
