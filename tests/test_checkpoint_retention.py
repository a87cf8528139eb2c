"""camsweep's checkpoint retention never deletes a checkpoint that the run's stored snapshot
still names (Tune's own `num_to_keep` does, for a moment after each checkpoint: a driver killed
then leaves a run whose resume errors the trial)."""

import json
import time
from pathlib import Path

import pytest
from ray import tune
from ray.tune.experiment import Trial

from sweeps.checkpoint_retention import CheckpointRetention, ProgressUpload, deletable_checkpoints
from sweeps.snapshot_backup import SnapshotBackup
from sweeps.status import SNAPSHOT_BACKUP_DIR

ITERATIONS = 5


def test_deletable_checkpoints_keep_the_newest_and_all_a_snapshot_may_name():
    c = [f"checkpoint_00000{i}" for i in range(6)]
    # All named up to date (after Tune's final snapshot): only the newest `keep` stay.
    assert deletable_checkpoints(c[:5], c[4], keep=2, named={c[4]}) == c[:3]
    assert deletable_checkpoints(c[:5], c[4], keep=1, named={c[4]}) == c[:4]
    # The stored snapshot names c1 while one naming c3 is still on its way to storage: nothing
    # from c1 on may go, though c1..c2 are beyond `keep`.
    assert deletable_checkpoints(c, c[5], keep=2, named={c[1]}) == c[:1]
    # The backup names an older one than Tune's snapshot: the older counts.
    assert deletable_checkpoints(c, c[5], keep=1, named={c[4], c[2]}) == c[:2]
    # c3..c5 are on storage but not registered with Tune (latest c2): none of them goes.
    assert deletable_checkpoints(c, c[2], keep=1, named={c[2]}) == c[:2]
    # A trial no stored snapshot names yet: any of its checkpoints may be named next.
    assert deletable_checkpoints(c, c[5], keep=1, named=set()) == []
    assert deletable_checkpoints(c[:1], c[0], keep=3, named={c[0]}) == []


def _checkpointing_trainable(config):
    # Slow enough that Tune's snapshot after one checkpoint reaches storage before the next.
    import tempfile

    for i in range(config.get("iterations", ITERATIONS)):
        with tempfile.TemporaryDirectory() as d:
            Path(d, "state.txt").write_text(str(i))
            tune.report({"step": i}, checkpoint=tune.Checkpoint.from_directory(d))
        time.sleep(config.get("sleep", 0.4))


def _stored_names(run_dir: Path) -> dict[str, Path]:
    """Decoded the way `Tuner.restore` decodes it: trial id -> the checkpoint the newest
    snapshot on storage (and camsweep's backup of it) names."""
    named = {}
    for folder in (run_dir, run_dir / SNAPSHOT_BACKUP_DIR):
        states = sorted(folder.glob("experiment_state-*.json"))
        if not states:
            continue
        try:
            data = json.loads(states[-1].read_text())
        except ValueError:
            continue  # being rewritten this instant
        for trial_json, meta_json in data["trial_data"]:
            trial = Trial.from_json_state(trial_json, stub=True)
            trial.restore_run_metadata(meta_json)
            if trial.checkpoint is not None:
                named[f"{folder.name}:{trial.trial_id}"] = Path(trial.checkpoint.path)
    return named


class DanglingSnapshotWatch(tune.Callback):
    """Records every moment the stored snapshot names a checkpoint that is gone: what a
    driver killed at that moment would resume from."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.dangling, self.stored_lag = run_dir, [], []

    def _look(self):
        self.dangling += [str(p) for p in _stored_names(self.run_dir).values() if not p.exists()]

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self._look()
        # The progress log a restarted trial gets back from storage: as long as the driver's?
        logs = [
            Path(folder, "result.json")
            for folder in (trial.local_path, trial.storage.trial_fs_path)
        ]
        lines = [len(p.read_text().splitlines()) if p.exists() else 0 for p in logs]
        self.stored_lag.append(lines[0] - lines[1])

    def on_step_end(self, iteration, trials, **info):
        self._look()


def _fit(storage: Path, num_to_keep, callbacks, space=None) -> Path:
    run_dir = storage / "run"
    tune.Tuner(
        _checkpointing_trainable,
        param_space=space or {"seed": tune.grid_search([0, 1])},
        run_config=tune.RunConfig(
            name="run",
            storage_path=str(storage),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=num_to_keep),
            callbacks=callbacks(run_dir),
            verbose=0,
        ),
    ).fit()
    return run_dir


def _checkpoints(run_dir: Path) -> dict[str, list[str]]:
    return {
        t.name: sorted(c.name for c in t.glob("checkpoint_*"))
        for t in run_dir.glob("_checkpointing_trainable_*")
    }


@pytest.mark.slow
def test_retention_keeps_what_the_stored_snapshot_names_and_the_progress_log_stays_stored(
    tmp_path, local_ray
):
    watch = []

    def callbacks(run_dir):
        watch.append(DanglingSnapshotWatch(run_dir))
        return [
            SnapshotBackup(run_dir),
            CheckpointRetention(keep=1, every_s=0),
            ProgressUpload(),
            watch[0],
        ]

    run_dir = _fit(tmp_path, None, callbacks)
    assert watch[0].dangling == []
    assert watch[0].stored_lag == [0] * 2 * ITERATIONS
    kept = _checkpoints(run_dir)
    assert len(kept) == 2
    # After Tune's final snapshot, each trial keeps only its newest checkpoint.
    assert all(names == [f"checkpoint_{ITERATIONS - 1:06d}"] for names in kept.values()), kept


@pytest.mark.slow
def test_the_watch_sees_tunes_own_retention_leave_a_dangling_snapshot(tmp_path, local_ray):
    """Why camsweep has its own retention; if this starts failing, a Ray upgrade fixed the
    window and `CheckpointConfig(num_to_keep)` may be used again."""
    watch = []

    def callbacks(run_dir):
        watch.append(DanglingSnapshotWatch(run_dir))
        return [watch[0]]

    _fit(tmp_path, 1, callbacks)
    assert watch[0].dangling, "Tune no longer deletes a checkpoint its stored snapshot names"


@pytest.mark.slow
def test_retention_on_a_slow_store_waits_for_the_snapshot_on_its_way(
    tmp_path, local_ray, monkeypatch
):
    """Tune uploads each snapshot in the background; on a slow store (S3, a busy NFS) the trial
    checkpoints several times while one is on its way. The checkpoint it names must still be
    there when it lands."""
    from ray.train._internal import storage

    upload = storage._FilesystemSyncer._sync_up_command

    def slow_upload(self, local_path, uri, exclude=None):
        fn, kwargs = upload(self, local_path, uri, exclude)

        def delayed(**kw):
            if "driver_artifacts" in local_path:  # the driver's snapshot, not a checkpoint
                time.sleep(1.5)
            return fn(**kw)

        return delayed, kwargs

    monkeypatch.setattr(storage._FilesystemSyncer, "_sync_up_command", slow_upload)
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "1")  # a snapshot every second, not every 10
    watch = []

    def callbacks(run_dir):
        watch.append(DanglingSnapshotWatch(run_dir))
        return [CheckpointRetention(keep=1, every_s=0), watch[0]]

    run_dir = _fit(tmp_path, None, callbacks, space={"iterations": 15, "sleep": 0.2})
    assert watch[0].dangling == []
    (kept,) = _checkpoints(run_dir).values()
    assert kept == ["checkpoint_000014"]  # after Tune's final snapshot: only the newest
