"""Index the PolypGen single-frame layout (or a CSV manifest) into a manifest of records.

Layout, per centre k: ``data_C{k}/images_C{k}/<stem>.jpg`` and ``data_C{k}/masks_C{k}/<stem>_mask.jpg``;
camsweep's synthetic generator adds ``data_C{k}/overlays_C{k}/<stem>_overlay.png`` (the ground truth
of the extra-anatomical content). The root may be the release folder
(``PolypGen2021_MultiCenterData_v3``) or its parent. Everything else the release ships (bounding
boxes, box drawings, sequences, the flat image copy, metadata, readme files, ``.DS_Store``) is not
part of the single-frame task and is not read. One release quirk is handled: the image
``C3_EndoCV2021_00489_.jpg`` (older copies: ``00489].jpg``) has the mask ``..._00489_mask.jpg``.

Patient ids come from :mod:`trainables.data.patients`. A CSV manifest with columns ``image, mask,
centre, patient`` (optional ``overlay``; relative paths are relative to the CSV's folder) overrides
the layout and the patient rules.

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

from trainables.data.patients import CentrePatients, assign_patients, load_patient_lists

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
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
    # How each centre's patient ids were found; a CSV manifest gives them for every centre.
    patients: dict[int, CentrePatients] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Centre → dataset name ("Kvasir-SEG") for layouts whose centres are whole datasets;
    # PolypGen's centres have none and are called by their number (C1..C6).
    centre_names: dict[int, str] = field(default_factory=dict)

    @property
    def centres(self) -> list[int]:
        return sorted({r.centre for r in self.records})

    def centre_name(self, centre: int) -> str:
        """The dataset name of ``centre`` (e.g. ``"Kvasir-SEG"``), or ``"C3"`` when unnamed."""
        return self.centre_names.get(centre, f"C{centre}")

    def centre_label(self, centre: int) -> str:
        """``"C7 (Kvasir-SEG)"`` for a named centre, ``"C3"`` otherwise: the number a config's
        ``held_out_centre`` takes, with the name a reader recognises."""
        name = self.centre_names.get(centre)
        return f"C{centre}" if name is None else f"C{centre} ({name})"

    @property
    def unknown_patients(self) -> dict[int, str]:
        """Centre → why its patients are unknown (its frames are then each their own patient)."""
        return {c: p.problem or "unknown" for c, p in sorted(self.patients.items()) if not p.known}

    @property
    def patients_known(self) -> bool:
        return not self.unknown_patients

    @property
    def has_overlays(self) -> bool:
        return bool(self.records) and all(r.overlay is not None for r in self.records)

    def to_csv(self, path: Path) -> None:
        """Writes the manifest as CSV (absolute paths) — the format `manifest:` accepts. The
        patient column of a centre whose patients are unknown is left empty: the file does not
        load until someone fills it in, so it cannot smuggle in a frame-level split."""
        unknown = self.unknown_patients
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow([*MANIFEST_COLUMNS, "overlay"])
            for r in self.records:
                patient = "" if r.centre in unknown else r.patient
                writer.writerow([r.image, r.mask, r.centre, patient, r.overlay or ""])


class DatasetError(ValueError):
    """Raised with *all* problems found, each naming the file or value at fault."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in the dataset:\n{lines}")


def _companion_stems(stem: str) -> list[str]:
    """Stems a frame's mask or overlay may carry: the release's one odd name, image
    C3_EndoCV2021_00489_ (older copies: 00489]), has the mask C3_EndoCV2021_00489_mask."""
    return [stem] + ([stem.rstrip("_]")] if stem.endswith(("_", "]")) else [])


def _find_mask(masks_dir: Path, stem: str) -> Path | None:
    for base in _companion_stems(stem):
        for suffix in IMAGE_SUFFIXES:
            candidate = masks_dir / f"{base}_mask{suffix}"
            if candidate.exists():
                return candidate
    return None


def _index_centre(centre_dir: Path, k: int, problems: list[str]) -> list[Record]:
    images_dir, masks_dir = centre_dir / f"images_C{k}", centre_dir / f"masks_C{k}"
    overlays_dir = centre_dir / f"overlays_C{k}"
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            problems.append(f"{d}: missing folder")
    if not images_dir.is_dir():
        return []
    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        problems.append(f"{images_dir}: centre C{k} has no images")
    stems = Counter(p.stem for p in images)
    for stem, n in sorted(stems.items()):
        if n > 1:
            problems.append(f"{images_dir}: duplicate name {stem!r} ({n} files with that stem)")
    records = []
    for image in images:
        mask = _find_mask(masks_dir, image.stem) if masks_dir.is_dir() else None
        if mask is None and masks_dir.is_dir():
            problems.append(f"{image}: no mask ({masks_dir / (image.stem + '_mask.jpg')} missing)")
            continue
        overlay = _find_overlay(overlays_dir, image.stem)
        if mask is not None:
            # Patient ids are filled in per centre once every name is known.
            records.append(Record(image, mask, k, "", overlay))
    return records


def _find_overlay(overlays_dir: Path, stem: str) -> Path | None:
    for base in _companion_stems(stem):
        candidate = overlays_dir / f"{base}_overlay.png"
        if candidate.exists():
            return candidate
    return None


def find_release_root(root: Path) -> tuple[Path, list[str]]:
    """``root`` itself when it holds ``data_C<k>`` folders, else the one sub-folder that does
    (users point at the release folder or at the folder they unpacked it into)."""
    if _centre_dirs(root):
        return root, []
    inner = sorted(d for d in root.iterdir() if d.is_dir() and _centre_dirs(d))
    if len(inner) == 1:
        return inner[0], []
    if inner:
        names = ", ".join(d.name for d in inner)
        return root, [f"{root}: several datasets inside ({names}); point data.root at one"]
    return root, [f"{root}: no data_C<k> centre folders (is this a PolypGen root?)"]


def _centre_dirs(root: Path) -> list[tuple[int, Path]]:
    return sorted(
        (int(m.group(1)), d)
        for d in root.iterdir()
        if d.is_dir() and (m := _CENTRE_DIR.match(d.name))
    )


def _with_patients(
    records: list[Record], root: Path, pattern: re.Pattern[str] | None
) -> tuple[list[Record], dict[int, CentrePatients]]:
    lists, lists_problem = load_patient_lists(root)
    out: list[Record] = []
    found: dict[int, CentrePatients] = {}
    for k in sorted({r.centre for r in records}):
        of_centre = [r for r in records if r.centre == k]
        found[k] = assign_patients(
            k,
            [r.image.stem for r in of_centre],
            pattern=pattern,
            lists=lists,
            lists_problem=lists_problem,
        )
        # Unknown: each frame is its own patient (validation refuses to split such a centre
        # unless the user accepts a frame-level split).
        ids = found[k].patients or [r.image.stem for r in of_centre]
        out += [Record(r.image, r.mask, r.centre, pid, r.overlay) for r, pid in zip(of_centre, ids)]
    return out, found


def index_polypgen(
    root: Path | str,
    *,
    manifest: Path | str | None = None,
    patient_pattern: str | None = None,
) -> Manifest:
    """Indexes a PolypGen-style root, or reads a CSV manifest, into a :class:`Manifest`.

    Args:
        root: dataset root holding ``data_C{k}`` folders (or the folder holding that root).
        manifest: optional CSV (columns image, mask, centre, patient[, overlay]); overrides the
            folder layout entirely.
        patient_pattern: regex with a named group ``patient`` applied to image stems, instead of
            the built-in rules (:mod:`trainables.data.patients`). Centres whose patients cannot
            be found are listed in ``Manifest.unknown_patients``; their frames become their own
            patients.

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
    patient_pattern: str | None = None,
) -> tuple[Manifest, list[str]]:
    """Like :func:`index_polypgen`, but returns the usable records *and* the problems."""
    root = Path(root).expanduser()
    if manifest is not None:
        return read_manifest_csv(Path(manifest).expanduser(), root)
    if not root.is_dir():
        return Manifest(root, []), [f"{root}: data root does not exist"]
    pattern, problems = compile_patient_pattern(patient_pattern)
    if problems:
        return Manifest(root, []), problems
    root, problems = find_release_root(root)
    if problems:
        return Manifest(root, []), problems
    records: list[Record] = []
    for k, d in _centre_dirs(root):
        records += _index_centre(d, k, problems)
    names = Counter(r.image.name for r in records)
    for name, n in sorted(names.items()):
        if n > 1:
            centres = sorted(r.centre for r in records if r.image.name == name)
            problems.append(f"duplicate file name {name!r} in centres {centres}")
    records, patients = _with_patients(records, root, pattern)
    return Manifest(root, records, patients=patients), problems


def compile_patient_pattern(text: str | None) -> tuple[re.Pattern[str] | None, list[str]]:
    """The compiled ``patient_pattern`` (None when not given), or the problem with it."""
    if text is None:
        return None, []
    try:
        pattern = re.compile(text)
    except re.error as exc:
        return None, [f"patient_pattern {text!r}: invalid regex ({exc})"]
    if "patient" not in pattern.groupindex:
        return None, [f"patient_pattern {text!r}: needs a named group 'patient'"]
    return pattern, []


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
    patients = {
        c: CentrePatients(c, [r.patient for r in records if r.centre == c], f"manifest {path}")
        for c in sorted({r.centre for r in records})
    }
    return Manifest(root or base, records, patients=patients), problems
