"""A last good copy of Tune's experiment snapshot, beside it in the run folder.

Tune rewrites its snapshot files (``experiment_state-*.json``, the searcher's and callbacks'
``*.pkl``) in place on the results storage. When that storage fills up mid-write, the only
snapshot is left cut short and neither ``camsweep resume`` nor ``status`` could read the run.
:class:`SnapshotBackup` (a driver callback) copies the snapshot, when every file of it reads back
whole, into ``camsweep-snapshot/`` — written aside and renamed, so a failed copy leaves the
previous one intact — and :func:`repair_snapshot` puts it back before a resume.
"""

from __future__ import annotations

import json
import pickle
import shutil
import tempfile
import time
from pathlib import Path

from ray import tune

from sweeps.status import EXPERIMENT_STATE_GLOB
from sweeps.status import SNAPSHOT_BACKUP_DIR as BACKUP_DIR

# Tune's driver-side snapshot of a run (its names, with the session's timestamp).
SNAPSHOT_GLOBS = (
    EXPERIMENT_STATE_GLOB,
    "basic-variant-state-*.json",
    "searcher-state-*.pkl",
    "callback-states-*.pkl",
)


def _whole(path: Path) -> bytes | None:
    """The file's bytes if they read back as a whole snapshot file, else None."""
    try:
        data = path.read_bytes()
        if path.match(EXPERIMENT_STATE_GLOB):
            json.loads(data)
        elif path.suffix == ".pkl":
            pickle.loads(data)
    except Exception:  # cut short, or not ours to judge: not a good copy
        return None
    return data or None


def snapshot_files(run_dir: Path) -> list[Path]:
    return sorted(p for pattern in SNAPSHOT_GLOBS for p in run_dir.glob(pattern))


def backup_snapshot(run_dir: Path) -> bool:
    """Copies the run's snapshot into ``BACKUP_DIR`` if every file reads back whole (each file
    is read once: the bytes checked are the bytes copied)."""
    contents = {p.name: _whole(p) for p in snapshot_files(run_dir)}
    if not contents or None in contents.values():
        return False
    target = run_dir / BACKUP_DIR
    old = run_dir / f".{BACKUP_DIR}.old"
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{BACKUP_DIR}.", dir=run_dir))
    except OSError:
        return False
    try:
        for name, data in contents.items():
            (tmp / name).write_bytes(data)
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
        return True
    except OSError:  # the storage is full or read-only: keep the previous copy
        shutil.rmtree(tmp, ignore_errors=True)
        if not target.exists() and old.exists():
            old.rename(target)
        return False


def repair_snapshot(run_dir: Path) -> str | None:
    """Puts the last good copy back when a file of the run's snapshot is cut short; returns a
    line saying so, or None when the snapshot is whole (or there is no copy)."""
    damaged = [p.name for p in snapshot_files(run_dir) if _whole(p) is None]
    backup = run_dir / BACKUP_DIR
    if not damaged or not backup.is_dir():
        return None
    for p in snapshot_files(run_dir):
        p.unlink()
    for p in backup.iterdir():
        shutil.copyfile(p, run_dir / p.name)
    when = time.strftime("%H:%M:%S", time.localtime(backup.stat().st_mtime))
    return (
        f"{run_dir}: Tune's snapshot was cut short ({', '.join(damaged)}; the storage filled up "
        f"while it was written): restored camsweep's last good copy, from {when}"
    )


class SnapshotBackup(tune.Callback):
    """Takes the copy at most every ``every_s`` seconds, as trials report and finish."""

    def __init__(self, run_dir: Path, every_s: float = 10.0):
        self.run_dir, self.every_s, self._last = Path(run_dir), every_s, 0.0

    def _maybe(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.every_s:
            self._last = now
            backup_snapshot(self.run_dir)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._maybe()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._maybe(force=True)

    def on_experiment_end(self, trials, **info):
        self._maybe(force=True)  # Tune has just written its final snapshot
