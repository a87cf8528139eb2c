"""Checkpoint retention that never deletes a checkpoint a stored snapshot still names.

Tune (ray 2.60) deletes a trial's oldest checkpoint the moment it registers the one past
``CheckpointConfig(num_to_keep)``, and only then flags the experiment snapshot that stops naming
it; until that snapshot reaches storage, the one there names a deleted checkpoint. A driver
killed, or a disk that fills up, in between leaves a run whose resume errors that trial ("Could
not recover from checkpoint as it does not exist on storage anymore"). So camsweep runs Tune with
``num_to_keep=None`` and :class:`CheckpointRetention` (a driver callback) deletes the older
checkpoints itself, once the snapshot on storage and camsweep's backup of it
(``sweeps.snapshot_backup``) both name a newer one; :class:`ProgressUpload` does the other thing the
snapshot that ``num_to_keep`` forced did: it keeps each trial's stored progress log current.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import time
from pathlib import Path, PurePosixPath

import pyarrow.fs
from ray import tune
from ray.air.constants import EXPR_PROGRESS_FILE, EXPR_RESULT_FILE
from ray.tune.trainable.metadata import _TrainingRunMetadata

from sweeps.status import EXPERIMENT_STATE_GLOB, SNAPSHOT_BACKUP_DIR

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint_"  # Tune's folder names: checkpoint_000000, checkpoint_000001…


def _newest_state(fs: pyarrow.fs.FileSystem, folder: str) -> str | None:
    """Path of the newest ``experiment_state-*.json`` in ``folder`` (the one a resume reads)."""
    infos = fs.get_file_info(pyarrow.fs.FileSelector(folder, allow_not_found=True))
    names = sorted(
        i.base_name for i in infos if fnmatch.fnmatch(i.base_name, EXPERIMENT_STATE_GLOB)
    )
    return f"{folder}/{names[-1]}" if names else None


def named_checkpoints(
    fs: pyarrow.fs.FileSystem, experiment_path: str, trial_ids: set[str]
) -> dict[str, set[str]] | None:
    """Trial id (of ``trial_ids``) -> the checkpoint folder names that the run's stored
    snapshots name as its latest: Tune's newest snapshot, and camsweep's backup that a resume
    puts back when that one is cut short. None when either cannot be read whole (Tune may be
    rewriting it right now): then no checkpoint is safe to delete. Only those trials' metadata
    is decoded (~0.4 ms each), not the whole sweep's."""
    named: dict[str, set[str]] = {}
    for folder in (experiment_path, f"{experiment_path}/{SNAPSHOT_BACKUP_DIR}"):
        path = _newest_state(fs, folder)
        if path is None:
            continue
        try:
            with fs.open_input_stream(path) as fh:
                state = json.loads(fh.read())
            for trial_json, meta_json in state["trial_data"]:
                trial_id = json.loads(trial_json)["trial_id"]
                if trial_id not in trial_ids:
                    continue
                manager = _TrainingRunMetadata.from_json_state(meta_json).checkpoint_manager
                latest = manager.latest_checkpoint_result if manager else None
                if latest is not None:
                    named.setdefault(trial_id, set()).add(
                        PurePosixPath(latest.checkpoint.path).name
                    )
        except Exception:  # cut short or mid-write: judge nothing from it
            log.debug("snapshot %s not readable whole: deleting no checkpoint", path, exc_info=True)
            return None
    return named


def deletable_checkpoints(stored: list[str], latest: str, keep: int, named: set[str]) -> list[str]:
    """Of a trial's stored checkpoint folders, those that may be deleted now:
    - beyond the newest ``keep``, counted down from its latest registered one (``latest``;
      anything newer is not registered yet, and a snapshot written next may name it);
    - and older than every one a stored snapshot names (``named``). A snapshot on its way to
      storage (Tune uploads it in the background) names the same or a newer one, never an
      older one; with nothing named, one may name any of them, so none may go."""
    if not named:
        return []
    older = sorted(name for name in stored if name < latest)
    spare = older[: max(0, len(older) - (keep - 1))]
    return [name for name in spare if name < min(named)]


class ProgressUpload(tune.Callback):
    """Puts a trial's progress logs (``result.json``, ``progress.csv``) on storage at each of
    its checkpoints. Tune replaces the driver's copies with the stored ones when the trial
    restarts from a checkpoint (a lost node, a resume); with ``num_to_keep`` it forced a sync
    every so many checkpoints that kept them current, and without it (see the module's note)
    the stored ones lag by up to a snapshot period: a restarted trial lost its earlier lines."""

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        fs, folder = trial.storage.storage_filesystem, trial.storage.trial_fs_path
        for name in (EXPR_RESULT_FILE, EXPR_PROGRESS_FILE):
            local = Path(trial.local_path, name)
            if not local.is_file():
                continue
            # Written aside and renamed: Tune's background sync may be writing the same file.
            part = f"{folder}/.{name}.camsweep-part"
            try:
                pyarrow.fs.copy_files(local.as_posix(), part, destination_filesystem=fs)
                fs.move(part, f"{folder}/{name}")
            except Exception as exc:  # noqa: BLE001 - never let it stop Tune registering the
                # checkpoint (a callback error here does); full or read-only storage: the trial
                # itself reports that
                log.warning("could not store %s of %s: %s", name, trial, exc)


class CheckpointRetention(tune.Callback):
    """Keeps each trial's newest ``keep`` checkpoints (as ``num_to_keep`` would), deleting an
    older one only when the stored snapshots name a newer one (``deletable_checkpoints``).
    Looks at most every ``every_s`` seconds while a trial has checkpoints to spare (each look
    reads the stored snapshot), and once at the end, after Tune's final snapshot (list it after
    ``SnapshotBackup``, which refreshes the backup there first)."""

    def __init__(self, keep: int, every_s: float = 5.0):
        self.keep, self.every_s = keep, every_s
        self._waiting: dict[str, tune.experiment.Trial] = {}
        self._last = 0.0

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        # Called before Tune registers the new checkpoint: it is pruned from a later step.
        self._waiting[trial.trial_id] = trial

    def on_step_end(self, iteration, trials, **info):
        if self._waiting and time.monotonic() - self._last >= self.every_s:
            self._prune(list(self._waiting.values()))

    def on_experiment_end(self, trials, **info):
        self._prune(trials)

    def _prune(self, trials) -> None:
        self._last = time.monotonic()
        trials = [t for t in trials if t.checkpoint is not None]
        if not trials:
            return
        fs, experiment_path = (
            trials[0].storage.storage_filesystem,
            trials[0].storage.experiment_fs_path,
        )
        named = named_checkpoints(fs, experiment_path, {t.trial_id for t in trials})
        if named is None:
            return
        for trial in trials:
            if self._prune_trial(fs, trial, named.get(trial.trial_id, set())):
                self._waiting.pop(trial.trial_id, None)

    def _prune_trial(self, fs: pyarrow.fs.FileSystem, trial, named: set[str]) -> bool:
        """Deletes what may go; True when nothing is left waiting on a snapshot."""
        folder = trial.storage.trial_fs_path
        infos = fs.get_file_info(pyarrow.fs.FileSelector(folder, allow_not_found=True))
        stored = [
            i.base_name
            for i in infos
            if i.type == pyarrow.fs.FileType.Directory and i.base_name.startswith(CHECKPOINT_PREFIX)
        ]
        latest = PurePosixPath(trial.checkpoint.path).name
        deletable = deletable_checkpoints(stored, latest, self.keep, named)
        for name in deletable:
            try:
                fs.delete_dir(f"{folder}/{name}")
            except OSError as exc:  # read-only or full storage: keep it, and the run going
                log.warning("could not delete old checkpoint %s/%s: %s", folder, name, exc)
        # Done when every spare one could go (with all named, none waits on a later snapshot).
        return deletable == deletable_checkpoints(stored, latest, self.keep, {latest})
