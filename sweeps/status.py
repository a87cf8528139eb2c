"""Reading a run folder: the trials, their state and metrics — from stored files only.

Works on finished, running and interrupted sweeps: it reads Tune's latest experiment state
(trial status, config, last result, failures) and each trial folder's ``results.json`` (written
when a trial finishes its test evaluation). No Ray process is needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainables import metric_keys as K
from trainables.run_files import RESULTS_FILE


@dataclass
class TrialRecord:
    trial_id: str
    status: str  # PENDING | RUNNING | PAUSED | TERMINATED | ERROR
    config: dict[str, Any]  # the axis values
    path: Path
    last_result: dict[str, Any] = field(default_factory=dict)
    final: dict[str, float] | None = None  # results.json metrics, when the trial finished
    error: str | None = None
    failures: int = 0

    @property
    def finished(self) -> bool:
        return self.status == "TERMINATED" and self.final is not None

    def metric(self, key: str) -> float | None:
        source = self.final if self.final is not None else self.last_result
        value = source.get(key)
        return None if value is None else float(value)


# camsweep's last good copy of Tune's snapshot (see sweeps.snapshot_backup).
SNAPSHOT_BACKUP_DIR = "camsweep-snapshot"
# Tune's experiment snapshot, one per driver session (the newest name is the one a resume reads).
EXPERIMENT_STATE_GLOB = "experiment_state-*.json"


def _latest_state(run_dir: Path) -> tuple[dict[str, Any], bool]:
    """Tune's latest experiment state, and whether it is camsweep's (older) copy of it."""
    states = sorted(run_dir.glob(EXPERIMENT_STATE_GLOB))
    if not states:
        raise FileNotFoundError(f"{run_dir}: no experiment state (not a started sweep?)")
    try:
        return json.loads(states[-1].read_text()), False
    except ValueError:
        # Cut short (the storage filled up while Tune rewrote it): read the last good copy.
        backups = sorted((run_dir / SNAPSHOT_BACKUP_DIR).glob(EXPERIMENT_STATE_GLOB))
        if not backups:
            raise ValueError(
                f"{states[-1]}: cut short, and no copy in {run_dir / SNAPSHOT_BACKUP_DIR}"
            ) from None
        return json.loads(backups[-1].read_text()), True


def _error_text(path: Path, meta: dict[str, Any]) -> str | None:
    name = meta.get("error_filename")
    if not name:
        return None
    candidate = path / Path(name).name
    return last_line(candidate.read_text() if candidate.exists() else str(name))


def last_line(traceback_text: str) -> str:
    """The last non-empty line of a traceback: the exception and its message."""
    lines = [ln.strip() for ln in traceback_text.splitlines() if ln.strip()]
    return lines[-1] if lines else "error"


def read_run(run_dir: Path | str) -> list[TrialRecord]:
    """All trials Tune knows of in ``run_dir``, in trial-id order."""
    run_dir = Path(run_dir).expanduser()
    state, from_copy = _latest_state(run_dir)
    trials = []
    for trial_json, meta_json in state["trial_data"]:
        info = json.loads(trial_json)
        meta = json.loads(meta_json) if isinstance(meta_json, str) else meta_json
        path = run_dir / info["relative_logdir"]
        try:
            final = json.loads((path / RESULTS_FILE).read_text())["metrics"]
        except (OSError, ValueError, KeyError):
            # Missing, or cut short (the storage filled up while Tune copied it): the trial is
            # not finished until a resumed run writes it again.
            final = None
        status = info["status"]
        if from_copy and final is not None:
            status = "TERMINATED"  # its results.json is whole: it ended after the copy was taken
        trials.append(
            TrialRecord(
                trial_id=info["trial_id"],
                status=status,
                config=info["config"],
                path=path,
                last_result=meta.get("last_result") or {},
                final=final,
                error=_error_text(path, meta),
                failures=meta.get("num_failures", 0),
            )
        )
    return sorted(trials, key=lambda t: t.trial_id)


def format_status(trials: list[TrialRecord], axes: list[str]) -> str:
    """One row per trial: state, axis values, epoch, best val Dice, out-of-distribution Dice."""

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    header = ["trial", "state", *axes, "epoch", "best val dice", "test_out dice"]
    rows = []
    for t in trials:
        state = t.status.lower() if t.status != "TERMINATED" or t.final else "stopped"
        rows.append(
            [
                t.trial_id,
                state + (f" ({t.failures} retries)" if t.failures else ""),
                *(str(t.config.get(a, "")) for a in axes),
                str(int(t.metric(K.EPOCH) or 0)),
                fmt(t.metric(K.BEST_VAL_DICE)),
                fmt(t.final.get("test_out/dice") if t.final else None),
            ]
        )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    lines.append(", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())))
    for t in trials:
        if t.error:
            lines.append(f"{t.trial_id} errored: {t.error}")
    return "\n".join(lines)
