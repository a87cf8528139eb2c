"""Cost of a sweep in resource-hours — per held-out centre, per arm (baseline / augmented), per
architecture and in total — from each trial's run time and its resource share."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeps.spec import SweepSpec
from sweeps.status import TrialRecord

# Tune's per-trial log (one JSON line per reported result), written by the trials.
TUNE_RESULT_FILE = "result.json"


def _last_json_line(path: Path) -> dict[str, Any] | None:
    """The last line of a JSON-lines file, reading only the file's tail."""
    with path.open("rb") as fh:
        fh.seek(0, io.SEEK_END)
        size = fh.tell()
        chunk = 8192
        while True:
            start = max(0, size - chunk)
            fh.seek(start)
            lines = [ln for ln in fh.read().splitlines() if ln.strip()]
            if lines and (start == 0 or len(lines) > 1):
                try:
                    return json.loads(lines[-1])
                except json.JSONDecodeError:
                    return None  # a line being written right now
            if start == 0:
                return None
            chunk *= 4


def trial_seconds(record: TrialRecord) -> float | None:
    """Run time of a trial: Tune's ``time_total_s`` of its last result (restores included)."""
    path = record.path / TUNE_RESULT_FILE
    last = _last_json_line(path) if path.exists() else None
    value = (last or record.last_result).get("time_total_s")
    return None if value is None else float(value)


@dataclass
class Cost:
    unit: str  # "GPU-hours" or "CPU-hours"
    rows: list[dict[str, Any]]  # group_by, value, trials, run_seconds, hours
    untimed: int  # trials without any reported result


def _arm(p: float, continuous: bool) -> str:
    if p == 0:
        return "p=0 (baseline)"
    return "p>0 (augmented)" if continuous else f"p={p:g}"


def compute_cost(spec: SweepSpec, records: Sequence[TrialRecord]) -> Cost:
    """Resource-hours per fold, per arm, per architecture and in total, over every trial that
    ran (finished, stopped, errored or running: all of them used the resources)."""
    kind = "gpu" if spec.resources.most()["gpu"] > 0 else "cpu"
    unit = f"{kind.upper()}-hours"
    p_axis = next((a for a in spec.axes if a.name == "p"), None)
    continuous = p_axis is not None and p_axis.form in ("uniform", "loguniform")
    totals: dict[tuple[str, str], list[tuple[float, float]]] = {}  # (run seconds, share)
    untimed = 0
    for record in records:
        seconds = trial_seconds(record)
        if seconds is None:
            untimed += 1
            continue
        cfg = spec.trial_config(record.config)
        share = spec.resources.of(cfg.model.arch)[kind]
        for group_by, value in (
            ("held_out_centre", f"C{cfg.held_out_centre}"),
            ("arm", _arm(cfg.masking.p, continuous)),
            ("arch", cfg.model.arch),
            ("total", "all"),
        ):
            totals.setdefault((group_by, value), []).append((seconds, share))
    order = {"held_out_centre": 0, "arm": 1, "arch": 2, "total": 3}
    rows = [
        {
            "group_by": group_by,
            "value": value,
            "trials": len(timed),
            "run_seconds": round(sum(t for t, _ in timed), 1),
            "hours": round(sum(t * share for t, share in timed) / 3600, 4),
            "unit": unit,
        }
        for (group_by, value), timed in sorted(
            totals.items(), key=lambda i: (order[i[0][0]], i[0][1])
        )
    ]
    return Cost(unit, rows, untimed)


def format_cost(cost: Cost, spec: SweepSpec) -> str:
    res = spec.resources
    kind = cost.unit.split("-")[0].lower()
    shares = {arch: res.of(arch)[kind] for arch in res.per_arch}
    per = f"{getattr(res, kind):g} {kind.upper()}"
    if shares:
        per += " (" + ", ".join(f"{a} {v:g}" for a, v in shares.items()) + ")"
    lines = [f"cost ({cost.unit}: trial run time × {per} per trial)"]
    lines += [
        f"  {r['group_by']:<16} {r['value']:<18} {r['trials']:>4} trial(s) {r['hours']:>10.4f}"
        for r in cost.rows
    ]
    if cost.untimed:
        lines.append(f"  {cost.untimed} trial(s) had not reported yet (no run time)")
    return "\n".join(lines)


def render_cost_csv(cost: Cost) -> str:
    buffer = io.StringIO()
    fields = ["group_by", "value", "trials", "run_seconds", "hours", "unit"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(cost.rows)
    return buffer.getvalue()
