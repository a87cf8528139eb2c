"""The dataset layouts camsweep reads, one registry: PolypGen and three public polyp datasets.

- ``polypgen``: PolypGen's single-frame release (:mod:`trainables.data.polypgen`), centres C1–C6.
- ``kvasir``: Kvasir-SEG, ``Kvasir-SEG/images/<name>.jpg`` and ``Kvasir-SEG/masks/<name>.jpg``.
  One centre, named ``Kvasir-SEG``.
- ``clinicdb``: CVC-ClinicDB, ``Original/<n>.tif`` and ``Ground Truth/<n>.tif`` (n = 1..612), or
  the PNG copy; a root holding ``TIF/`` and ``PNG/`` copies is read from ``TIF/``, the release's
  own files (``PNG/`` is a conversion of the same frames). One centre, named ``CVC-ClinicDB``.
- ``testdataset``: the five-dataset test folder widely used since PraNet,
  ``TestDataset/<part>/{images,masks}/<name>.png`` with the parts CVC-300, CVC-ClinicDB,
  CVC-ColonDB, ETIS-LaribPolypDB and Kvasir (any subset). Each part is a centre named after its
  folder; a root that is one part's folder reads that part alone.
- ``auto``: whichever one layout the tree matches.

Every layout accepts its release folder (``Kvasir-SEG``, ``CVC-ClinicDB``, ``TestDataset``,
``PolypGen2021_MultiCenterData_v3``) or the folder holding it. Masks share their image's name
(any image suffix). The datasets other than PolypGen are single centres to camsweep and number
their centres from ``first_centre``; PolypGen keeps its own numbers.

None of Kvasir-SEG, CVC-ClinicDB or the test sets ships patient ids: their centres have unknown
patients (each frame becomes its own patient), which validation refuses for a training centre
unless the user accepts a frame-level split or gives the patients (a manifest, or a
``patient_pattern`` that reads them from the names).

Scanning looks at names only and reports every problem at once, each naming the file or folder
at fault; pixels are checked later by :func:`trainables.data.check.check_dataset` and the cache.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trainables.data.patients import CentrePatients, assign_patients
from trainables.data.polypgen import (
    IMAGE_SUFFIXES,
    Manifest,
    Record,
    compile_patient_pattern,
    find_release_root,
    scan_polypgen,
)

KVASIR_NAME = "Kvasir-SEG"
CLINICDB_NAME = "CVC-ClinicDB"
CLINICDB_FOLDERS = ("Original", "Ground Truth")  # images, masks
CLINICDB_FORMATS = ("TIF", "PNG")  # copies some distributions ship side by side; first preferred
TESTDATASET_NAME = "TestDataset"
TESTDATASET_PARTS = ("CVC-300", "CVC-ClinicDB", "CVC-ColonDB", "ETIS-LaribPolypDB", "Kvasir")
PAIRED_FOLDERS = ("images", "masks")  # Kvasir-SEG's and every test set's
CLINICDB_NO_PATIENTS = (
    "CVC-ClinicDB ships no patient ids: its 612 frames come from 29 colonoscopy video sequences "
    "with no patient or sequence ids in the release, so consecutive frames of one video would "
    "otherwise land in train and test"
)


@dataclass(frozen=True)
class ScanOptions:
    """What every layout's scan is given besides its folder."""

    first_centre: int  # number of the first centre of a layout without its own numbers
    pattern: re.Pattern[str] | None  # the user's patient_pattern, compiled


@dataclass(frozen=True)
class Layout:
    """One dataset layout: how to recognise its folder and how to index it."""

    name: str
    shape: str  # the tree it reads, for the messages of `auto`
    # The dataset folder when ``root`` is it or holds it, else None (used by `auto`; a scan
    # asked for explicitly reads ``root`` itself when this finds nothing, to name what is missing).
    locate: Callable[[Path], Path | None]
    scan: Callable[[Path, ScanOptions], tuple[Manifest, list[str]]]


# --- shared: paired image/mask folders ---------------------------------------------------------


def _natural_key(path: Path) -> list[int | str]:
    """File order with numbers compared as numbers (ClinicDB's 2.tif before 10.tif)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _image_files(folder: Path) -> list[Path]:
    # Dot files are skipped: archives unpacked on macOS carry "._1.tif" resource forks.
    return sorted(
        (
            p
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
        ),
        key=_natural_key,
    )


def _duplicate_stems(folder: Path, files: list[Path], problems: list[str]) -> set[str]:
    """Stems held by several files (``x.jpg`` and ``x.png``): which is meant cannot be known."""
    counts = Counter(p.stem for p in files)
    duplicates = {stem for stem, n in counts.items() if n > 1}
    for stem in sorted(duplicates):
        names = ", ".join(p.name for p in files if p.stem == stem)
        problems.append(f"{folder}: duplicate name {stem!r} ({names})")
    return duplicates


def _paired_records(
    images_dir: Path, masks_dir: Path, centre: int, problems: list[str]
) -> list[Record]:
    """Records of an image folder whose masks carry the image's stem in a sibling folder."""
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            problems.append(f"{folder}: missing folder")
    if not images_dir.is_dir():
        return []
    images = _image_files(images_dir)
    if not images:
        problems.append(f"{images_dir}: no images")
        return []
    skip = _duplicate_stems(images_dir, images, problems)
    masks: dict[str, Path] = {}
    if masks_dir.is_dir():
        mask_files = _image_files(masks_dir)
        skip |= _duplicate_stems(masks_dir, mask_files, problems)
        masks = {p.stem: p for p in mask_files}
    records = []
    for image in images:
        if image.stem in skip or not masks_dir.is_dir():
            continue  # already reported
        mask = masks.get(image.stem)
        if mask is None:
            problems.append(f"{image}: no mask ({masks_dir / image.stem}.* missing)")
            continue
        records.append(Record(image, mask, centre, ""))
    return records


def _has_folder(root: Path, names: tuple[str, ...]) -> bool:
    return any((root / name).is_dir() for name in names)


def _with_patients(
    records: list[Record], unknown_why: dict[int, str], pattern: re.Pattern[str] | None
) -> tuple[list[Record], dict[int, CentrePatients]]:
    """Patient ids from ``pattern`` where given, else unknown (``unknown_why``): then each
    frame is its own patient, and validation decides whether that may be split."""
    out: list[Record] = []
    found: dict[int, CentrePatients] = {}
    for centre, why in unknown_why.items():
        of_centre = [r for r in records if r.centre == centre]
        if pattern is None:
            found[centre] = CentrePatients(centre, None, "none", why)
        else:
            stems = [r.image.stem for r in of_centre]
            found[centre] = assign_patients(centre, stems, pattern=pattern, lists=None)
        ids = found[centre].patients or [r.image.stem for r in of_centre]
        out += [Record(r.image, r.mask, r.centre, pid, r.overlay) for r, pid in zip(of_centre, ids)]
    return out, found


def _single_centre(
    root: Path, images_dir: Path, masks_dir: Path, name: str, why: str, options: ScanOptions
) -> tuple[Manifest, list[str]]:
    problems: list[str] = []
    centre = options.first_centre
    records = _paired_records(images_dir, masks_dir, centre, problems)
    records, patients = _with_patients(records, {centre: why}, options.pattern)
    return Manifest(root, records, patients=patients, centre_names={centre: name}), problems


# --- polypgen ------------------------------------------------------------------------------------


def _locate_polypgen(root: Path) -> Path | None:
    found, problems = find_release_root(root)
    return None if problems else found


def _scan_polypgen(root: Path, options: ScanOptions) -> tuple[Manifest, list[str]]:
    # PolypGen numbers its centres itself (data_C1..data_C6): first_centre does not apply.
    pattern = None if options.pattern is None else options.pattern.pattern
    return scan_polypgen(root, patient_pattern=pattern)


# --- kvasir --------------------------------------------------------------------------------------


def _locate_kvasir(root: Path) -> Path | None:
    # A folder named like a TestDataset part (TestDataset/Kvasir) is that part, read by the
    # testdataset layout under its own name, not Kvasir-SEG's full release.
    if root.name not in TESTDATASET_PARTS and _has_folder(root, PAIRED_FOLDERS):
        return root
    release = root / KVASIR_NAME
    return release if release.is_dir() else None


def _scan_kvasir(root: Path, options: ScanOptions) -> tuple[Manifest, list[str]]:
    folder = _locate_kvasir(root) or root
    why = f"{KVASIR_NAME} ships no patient ids"
    return _single_centre(folder, folder / "images", folder / "masks", KVASIR_NAME, why, options)


# --- clinicdb ------------------------------------------------------------------------------------


def _clinicdb_copies(base: Path) -> list[Path]:
    """The folders under ``base`` holding Original/ and Ground Truth/: itself, else its TIF/ and
    PNG/ copies in order of preference."""
    if _has_folder(base, CLINICDB_FOLDERS):
        return [base]
    return [base / f for f in CLINICDB_FORMATS if _has_folder(base / f, CLINICDB_FOLDERS)]


def _locate_clinicdb(root: Path) -> Path | None:
    for base in (root, root / CLINICDB_NAME):
        copies = _clinicdb_copies(base) if base.is_dir() else []
        if copies:
            return copies[0]
    return None


def _scan_clinicdb(root: Path, options: ScanOptions) -> tuple[Manifest, list[str]]:
    folder = _locate_clinicdb(root) or root
    images_dir, masks_dir = (folder / name for name in CLINICDB_FOLDERS)
    found, problems = _single_centre(
        folder, images_dir, masks_dir, CLINICDB_NAME, CLINICDB_NO_PATIENTS, options
    )
    others = [c for c in _clinicdb_copies(folder.parent) if c != folder]
    if folder.name in CLINICDB_FORMATS and others:
        skipped = ", ".join(f"{c.name}/" for c in others)
        found.notes.append(
            f"{folder.parent}: holds CVC-ClinicDB as {folder.name}/ and {skipped}; reading "
            f"{folder.name}/, the release's own files ({skipped}: the same frames converted)"
        )
    return found, problems


# --- testdataset ---------------------------------------------------------------------------------


def _is_testdataset_part(folder: Path) -> bool:
    return folder.name in TESTDATASET_PARTS and _has_folder(folder, PAIRED_FOLDERS)


def _locate_testdataset(root: Path) -> Path | None:
    if _is_testdataset_part(root):
        return root
    for base in (root, root / TESTDATASET_NAME):
        # Parts are recognised by their images/masks folders: CVC-ClinicDB's own release
        # folder (Original/, Ground Truth/) has a part's name too.
        if any(_is_testdataset_part(base / name) for name in TESTDATASET_PARTS):
            return base
    return None


def _scan_testdataset(root: Path, options: ScanOptions) -> tuple[Manifest, list[str]]:
    folder = _locate_testdataset(root) or root
    if _is_testdataset_part(folder):
        parts = [folder]
    else:
        parts = [folder / name for name in TESTDATASET_PARTS if (folder / name).is_dir()]
    if not parts:
        expected = ", ".join(TESTDATASET_PARTS)
        return Manifest(folder, []), [f"{folder}: none of TestDataset's folders ({expected})"]
    problems: list[str] = []
    records: list[Record] = []
    names: dict[int, str] = {}
    why: dict[int, str] = {}
    # The parts share file names (1.png is in four of them): names are unique per centre only.
    for centre, part in enumerate(parts, start=options.first_centre):
        records += _paired_records(part / "images", part / "masks", centre, problems)
        names[centre] = part.name
        why[centre] = f"{part.name} ({TESTDATASET_NAME}) ships no patient ids"
    records, patients = _with_patients(records, why, options.pattern)
    notes = [] if parts == [folder] else _unread_folders(folder)
    return Manifest(folder, records, patients=patients, notes=notes, centre_names=names), problems


def _unread_folders(folder: Path) -> list[str]:
    """A note on sub-folders of a TestDataset that are none of its five parts (a misspelt part
    would otherwise go missing without a word)."""
    extra = sorted(
        d.name
        for d in folder.iterdir()
        if d.is_dir() and not d.name.startswith(".") and d.name not in TESTDATASET_PARTS
    )
    if not extra:
        return []
    return [f"{folder}: folder(s) {', '.join(extra)} are not TestDataset parts, not read"]


# --- registry ------------------------------------------------------------------------------------

LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout(
            "polypgen",
            "data_C<k>/images_C<k>, masks_C<k>",
            _locate_polypgen,
            _scan_polypgen,
        ),
        Layout("kvasir", "Kvasir-SEG/images, masks", _locate_kvasir, _scan_kvasir),
        Layout(
            "clinicdb",
            "CVC-ClinicDB/[TIF|PNG/]Original, Ground Truth",
            _locate_clinicdb,
            _scan_clinicdb,
        ),
        Layout(
            "testdataset",
            "TestDataset/<CVC-300|CVC-ClinicDB|CVC-ColonDB|ETIS-LaribPolypDB|Kvasir>/images, masks",
            _locate_testdataset,
            _scan_testdataset,
        ),
    )
}
AUTO = "auto"
LAYOUT_NAMES: tuple[str, ...] = (*LAYOUTS, AUTO)


def _detect(root: Path) -> tuple[Layout | None, list[str], list[str]]:
    """The one layout ``root`` matches, with a note saying so, or the problem why not."""
    matches = {name: folder for name, lay in LAYOUTS.items() if (folder := lay.locate(root))}
    if len(matches) == 1:
        [(name, folder)] = matches.items()
        return LAYOUTS[name], [f"{root}: layout {name} detected ({folder})"], []
    if not matches:
        tried = "; ".join(f"{lay.name} ({lay.shape})" for lay in LAYOUTS.values())
        return None, [], [f"{root}: no known dataset layout found; tried {tried}"]
    found = ", ".join(f"{name} ({folder})" for name, folder in matches.items())
    return (
        None,
        [],
        [
            f"{root}: ambiguous tree, it matches layouts {found}; point the root at one dataset "
            "or name its layout"
        ],
    )


def scan_layout(
    root: Path | str,
    layout: str = AUTO,
    *,
    patient_pattern: str | None = None,
    first_centre: int = 1,
) -> tuple[Manifest, list[str]]:
    """Indexes a dataset tree of a known layout (names only, no pixels).

    Args:
        root: the dataset's release folder or the folder holding it.
        layout: one of :data:`LAYOUT_NAMES`; ``auto`` detects it from the tree.
        patient_pattern: regex with a named group ``patient`` read from every image stem. For
            PolypGen it replaces the built-in rules; for the other layouts, which ship no
            patient ids, it is the only way to give them.
        first_centre: number of the first centre for layouts without their own numbers
            (Kvasir-SEG, CVC-ClinicDB, the test sets); PolypGen keeps C1–C6.

    Returns:
        The usable records (with centre names and how patients were found) and every problem,
        each naming the file or folder at fault; notes say which layout and copy were read.

    Raises:
        ValueError: for a layout name not in :data:`LAYOUT_NAMES` or a ``first_centre`` below 1.
    """
    if layout not in LAYOUT_NAMES:
        raise ValueError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUT_NAMES)}")
    if isinstance(first_centre, bool) or not isinstance(first_centre, int) or first_centre < 1:
        raise ValueError(f"first_centre must be an integer >= 1, got {first_centre!r}")
    # Absolute paths: the decoded cache keys on them, and a relative root means another folder
    # from another working directory.
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        return Manifest(root, []), [f"{root}: data root does not exist"]
    pattern, problems = compile_patient_pattern(patient_pattern)
    if problems:
        return Manifest(root, []), problems
    notes: list[str] = []
    if layout == AUTO:
        chosen, notes, problems = _detect(root)
        if chosen is None:
            return Manifest(root, []), problems
    else:
        chosen = LAYOUTS[layout]
    found, problems = chosen.scan(root, ScanOptions(first_centre, pattern))
    found.notes[:0] = notes
    return found, problems
