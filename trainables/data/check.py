"""`camsweep data check`: per-centre summary plus every problem in one pass."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainables.data.decode import DecodeError, decode_record
from trainables.data.layouts import scan_layout
from trainables.data.polypgen import Manifest, Record, scan_polypgen

# Polyp area is measured at this size: it is a fraction of the frame, and decoding a reduced
# image keeps the check fast on full-resolution data while still reading every file to the end.
_CHECK_SIZE = 128


@dataclass
class CentreSummary:
    centre: int
    images: int = 0
    patients: int = 0
    with_polyp: int = 0
    mean_polyp_area: float = 0.0  # fraction of the frame, over all frames
    patient_rule: str = ""  # how the patients were found ("unknown" when they were not)


@dataclass
class DataReport:
    manifest: Manifest
    centres: list[CentreSummary]
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        lines = [f"dataset {self.manifest.root}"]
        lines.append(
            f"{'centre':>6} {'images':>7} {'patients':>8} {'w/ polyp':>8} {'polyp area':>10}"
            "  patients from"
        )
        unknown = self.manifest.unknown_patients
        for c in self.centres:
            patients = "unknown" if c.centre in unknown else str(c.patients)
            lines.append(
                f"{self.manifest.centre_name(c.centre):>6} {c.images:>7} {patients:>8} {c.with_polyp:>8} "
                f"{c.mean_polyp_area:>10.4f}  {c.patient_rule}"
            )
        total = sum(c.images for c in self.centres)
        known = sum(c.patients for c in self.centres if c.centre not in unknown)
        lines.append(f"{'all':>6} {total:>7} {known:>8}")
        if self.manifest.has_overlays:
            lines.append("overlay ground truth: present (synthetic data)")
        lines += [f"note: {n}" for n in self.manifest.notes]
        for c, why in unknown.items():
            lines.append(
                f"warning: patients unknown for {self.manifest.centre_label(c)} ({why}). A sweep "
                f"that trains on {self.manifest.centre_label(c)} is "
                "refused unless data.manifest (see `camsweep data manifest`), data.patient_pattern "
                "or data.allow_frame_level_split gives its patients"
            )
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += [f"  - {p}" for p in self.problems]
        else:
            lines.append("no problems found")
        return "\n".join(lines)


def _check_record(r: Record) -> tuple[float | None, list[str]]:
    try:
        _, mask, _ = decode_record(r, _CHECK_SIZE)
    except DecodeError as exc:
        return None, str(exc).splitlines()
    return float(mask.mean()), []


def check_dataset(
    root: Path | str,
    *,
    manifest: Path | str | None = None,
    patient_pattern: str | None = None,
    layout: str = "auto",
) -> DataReport:
    """Indexes and decodes every file; never raises for data problems, it lists them.

    Raises:
        ValueError: an unknown ``layout``.
    """
    if manifest is not None:
        found, problems = scan_polypgen(root, manifest=manifest)
    else:
        found, problems = scan_layout(root, layout, patient_pattern=patient_pattern)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(_check_record, found.records))
    summaries = {}
    areas: dict[int, list[float]] = {}
    patients: dict[int, set[str]] = {}
    for r, (area, record_problems) in zip(found.records, results):
        problems += record_problems
        s = summaries.setdefault(r.centre, CentreSummary(r.centre))
        s.images += 1
        patients.setdefault(r.centre, set()).add(r.patient)
        if area is not None:
            areas.setdefault(r.centre, []).append(area)
            s.with_polyp += area > 0
    for c, s in summaries.items():
        s.patients = len(patients[c])
        rule = found.patients.get(c)
        s.patient_rule = "" if rule is None else ("unknown" if not rule.known else rule.rule)
        s.mean_polyp_area = float(np.mean(areas[c])) if areas.get(c) else 0.0
    return DataReport(found, [summaries[c] for c in sorted(summaries)], problems)
