"""Which patient each frame belongs to: the rules that turn file names into patient ids.

Splits must keep a patient's frames together (near-identical frames of one colonoscopy would
otherwise sit in train, validation and test at once), so every centre's frames need patient ids.
Per centre, the first rule that applies:

1. ``patient_pattern`` (a user regex with a group ``patient``), when the user sets one;
2. camsweep's own synthetic naming ``C{k}_P{nnn}_{frame}``;
3. the PolypGen rules, when every name of the centre follows PolypGen's naming for that centre:
   C1 by the 3-digit name prefix, C4 by the leading number, and C2, C3, C5, C6 by per-frame
   patient lists — the authors' lists (shipped in ``polypgen_patients.json``, with attribution),
   or a ``polypgen-patients.json`` at the dataset root (camsweep's generator writes one for its
   synthetic patients). As in the authors' loader, the frames are sorted by their frame number
   and zipped with the list; unlike it, a list whose length differs from the centre's frame
   count is refused (the authors' ``zip`` silently drops or shifts frames).

A centre where no rule applies has *unknown* patients; the reason is kept so that validation can
say what to do about it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# camsweep's synthetic names (C3_P007_0012); also the documented example of a patient_pattern.
CAMSWEEP_PATIENT_PATTERN = r"_(?P<patient>[Pp]\d+)_"
SHIPPED_LISTS = Path(__file__).with_name("polypgen_patients.json")
ROOT_LISTS_NAME = "polypgen-patients.json"  # a dataset's own lists, next to its data_C<k>

# PolypGen's single-frame names per centre (see the README's PolypGen section). ``patient``: the
# patient id is in the name; ``n``: the frame number the per-frame lists are ordered by.
POLYPGEN_NAMES: dict[int, re.Pattern[str]] = {
    1: re.compile(r"^(?P<patient>\d{3})[A-Za-z][A-Za-z0-9]*_\w+$"),  # 144OLC1_100H0022
    2: re.compile(r"^EndoCV2021_(?P<n>\d+)$"),  # EndoCV2021_001000
    # C3_EndoCV2021_00238; one release frame is 00489_ (older copies: 00489]).
    3: re.compile(r"^C3_EndoCV2021_(?P<n>\d+)[_\]]?$"),
    4: re.compile(r"^(?P<patient>\d+)_endocv2021_positive_(?P<n>\d+)$", re.IGNORECASE),
    5: re.compile(r"^EndoCV2021_C5_(?P<n>\d+)$"),  # EndoCV2021_C5_50000279
    6: re.compile(r"^EndoCV2021_C6_(?P<n>\d+)$"),  # EndoCV2021_C6_0100045
}
LIST_CENTRES = (2, 3, 5, 6)  # centres whose names carry no patient: per-frame lists
_CAMSWEEP_NAMES = re.compile(CAMSWEEP_PATIENT_PATTERN)


@dataclass(frozen=True)
class CentrePatients:
    """The patient ids of one centre's frames (aligned with the stems given), or why not."""

    centre: int
    patients: list[str] | None  # None: unknown
    rule: str  # how they were found, for `data check` and the README's wording
    problem: str | None = None  # why unknown

    @property
    def known(self) -> bool:
        return self.patients is not None


@dataclass(frozen=True)
class PatientLists:
    """Per-frame patient lists for the centres PolypGen does not name patients in."""

    source: Path
    centres: dict[int, list[str]]


def load_patient_lists(root: Path) -> tuple[PatientLists | None, str | None]:
    """The dataset's own lists (``root/polypgen-patients.json``) or else the shipped ones."""
    path = root / ROOT_LISTS_NAME
    if not path.is_file():
        path = SHIPPED_LISTS
    try:
        raw = json.loads(path.read_text())
        centres = {
            int(str(k).upper().removeprefix("C")): [str(p) for p in v]
            for k, v in raw["centres"].items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return None, f"{path}: not a patient-list file ({type(exc).__name__}: {exc})"
    return PatientLists(path, centres), None


def _from_pattern(
    centre: int, stems: Sequence[str], pattern: re.Pattern[str], rule: str
) -> tuple[CentrePatients | None, str | None]:
    """The patients read by ``pattern`` from every stem, or (None, the first stem it misses)."""
    found = []
    for stem in stems:
        match = pattern.search(stem)
        if match is None:
            return None, stem
        found.append(match.group("patient"))
    return CentrePatients(centre, found, rule), None


def _polypgen(centre: int, stems: Sequence[str], lists: PatientLists | None, lists_problem):
    scheme = POLYPGEN_NAMES[centre]
    matches = [scheme.match(s) for s in stems]
    misses = [s for s, m in zip(stems, matches) if m is None]
    if len(misses) == len(stems):
        return None
    if misses:  # a PolypGen centre with foreign or renamed files: no rule can be trusted
        return CentrePatients(
            centre,
            None,
            "PolypGen names",
            f"C{centre}: {len(misses)} of {len(stems)} names do not follow PolypGen's C{centre} "
            f"naming (e.g. {misses[0]!r})",
        )
    if centre not in LIST_CENTRES:
        what = "3-digit name prefix" if centre == 1 else "leading number of the name"
        return CentrePatients(centre, [m.group("patient") for m in matches], f"PolypGen: {what}")
    if lists is None:
        return CentrePatients(centre, None, "PolypGen list", lists_problem)
    entries = lists.centres.get(centre)
    where = lists.source.name if lists.source != SHIPPED_LISTS else "the authors' list"
    if entries is None:
        return CentrePatients(
            centre, None, "PolypGen list", f"{lists.source} has no list for C{centre}"
        )
    if len(entries) != len(stems):
        return CentrePatients(
            centre,
            None,
            "PolypGen list",
            f"C{centre} has {len(stems)} frames but {where} ({lists.source}) has {len(entries)} "
            "entries: which frame an entry belongs to cannot be known, so the list is not used",
        )
    numbers = [int(m.group("n")) for m in matches]
    dup = sorted(n for n, count in Counter(numbers).items() if count > 1)
    if dup:
        return CentrePatients(
            centre, None, "PolypGen list", f"C{centre}: frame number(s) {dup} occur twice"
        )
    order = sorted(range(len(stems)), key=numbers.__getitem__)
    patients: list[str] = [""] * len(stems)
    for rank, i in enumerate(order):
        patients[i] = entries[rank]
    return CentrePatients(centre, patients, f"PolypGen: {where}, by frame number")


def assign_patients(
    centre: int,
    stems: Sequence[str],
    *,
    pattern: re.Pattern[str] | None,
    lists: PatientLists | None,
    lists_problem: str | None = None,
) -> CentrePatients:
    """Patient ids for one centre's image stems (see the module docstring for the rules)."""
    if pattern is not None:
        found, miss = _from_pattern(centre, stems, pattern, f"patient_pattern {pattern.pattern!r}")
        if found:
            return found
        return CentrePatients(
            centre,
            None,
            "patient_pattern",
            f"C{centre}: {miss!r} does not match patient_pattern {pattern.pattern!r}",
        )
    found, _ = _from_pattern(centre, stems, _CAMSWEEP_NAMES, "camsweep synthetic names")
    if found:
        return found
    if centre in POLYPGEN_NAMES:
        found = _polypgen(centre, stems, lists, lists_problem)
        if found:
            return found
    example = stems[0] if stems else "(no images)"
    return CentrePatients(
        centre,
        None,
        "none",
        f"C{centre}: names such as {example!r} carry no patient id camsweep knows how to read",
    )
