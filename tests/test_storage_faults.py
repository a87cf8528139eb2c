"""Storage faults: the results storage fills up mid-sweep. Running trials end with a clear reason,
nothing written before is damaged, and once space is back `camsweep resume` completes the sweep
without training a finished trial again."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from sweeps.launch import resume_sweep, run_sweep
from sweeps.spec import load_spec
from sweeps.status import format_status, read_run
from tests.conftest import tiny_spec
from trainables.checkpoint import load_checkpoint
from trainables.storage_fault import StorageFault

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path):
    """A 128 MiB tmpfs of its own (needs root, as in CI); skipped, saying why, elsewhere."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path) -> Path:
    """Writes a filler file until the disk is full."""
    filler = disk / "filler"
    with filler.open("wb") as fh:
        try:
            while True:
                fh.write(b"\0" * (1 << 20))
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def _stored_files(run_dir: Path) -> dict[Path, bytes]:
    """Every checkpoint and result file of the trials, with its bytes."""
    files = list(run_dir.glob("*/checkpoint_*/*.pt")) + list(run_dir.glob("*/results.json"))
    return {p: p.read_bytes() for p in files}


def _mid_trial(results: Path) -> bool:
    """A trial has finished, and another has reported an epoch (its checkpoint is stored)."""
    trial_dirs = [d for d in results.glob("*/train_segmentation_*") if d.is_dir()]
    finished = [d for d in trial_dirs if (d / "results.json").exists()]
    running = [
        d
        for d in trial_dirs
        if not (d / "results.json").exists()
        and (d / "result.json").exists()
        and (d / "result.json").read_text().strip()
    ]
    return bool(finished and running)


def test_storage_full_mid_sweep_loses_nothing_and_resume_completes(small_disk, local_ray, capsys):
    raw = tiny_spec(
        small_disk,
        space={"arch": "unet", "held_out_centre": {"grid": [2]}, "seed": {"grid": [0, 1, 2]}},
        # Deleting a trial's old checkpoints would free the filled disk again: keep all three.
        checkpoints_to_keep=3,
    )
    raw["train"]["epochs"] = 3
    # The shared test data cache stays off the small disk; the results storage is on it.
    spec = load_spec("t.yaml", raw=raw, local_gpus=0)
    results = small_disk / "results"
    before: dict[Path, bytes] = {}
    filled: list[Path] = []

    def fill_mid_trial() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not _mid_trial(results):
            time.sleep(0.1)
        (run,) = results.glob("tiny-*")
        before.update(_stored_files(run))
        filled.append(_fill(small_disk))

    watcher = threading.Thread(target=fill_mid_trial, daemon=True)
    watcher.start()
    with pytest.raises(StorageFault) as stopped:
        run_sweep(spec)
    watcher.join(timeout=5)
    assert filled, "the disk was never filled"
    (run_dir,) = results.glob("tiny-*")
    # One clear reason, from the sweep and from the trial that was running: what and what next.
    message = str(stopped.value)
    assert "No space left on device" in message and f"camsweep resume {run_dir}" in message
    printed = capsys.readouterr().out
    assert "StorageFault: results storage not writable (No space left on device)" in printed
    trials = read_run(run_dir)
    finished = {t.trial_id for t in trials if t.finished}
    assert 1 <= len(finished) < 3, format_status(trials, ["seed"])
    # Nothing written before the disk filled up was damaged, or deleted.
    for path, data in before.items():
        assert path.read_bytes() == data, path
        if path.suffix == ".pt":
            load_checkpoint(path)

    filled[0].unlink()  # space is back
    resume_sweep(run_dir)
    trials = {t.trial_id: t for t in read_run(run_dir)}
    assert all(t.finished for t in trials.values()), format_status(list(trials.values()), ["seed"])
    for path, data in before.items():
        if path.name == "results.json":  # finished trials were not trained or tested again
            assert path.read_bytes() == data
    for t in trials.values():
        history = json.loads((t.path / "results.json").read_text())["history"]
        assert [h["epoch"] for h in history] == [1, 2, 3]


def test_a_snapshot_cut_short_is_restored_from_the_last_good_copy(straight_run, tmp_path):
    from sweeps.snapshot_backup import backup_snapshot, repair_snapshot
    from sweeps.status import SNAPSHOT_BACKUP_DIR

    assert (straight_run[2] / SNAPSHOT_BACKUP_DIR).is_dir()  # the sweep kept a copy as it ran
    run = tmp_path / "run"
    shutil.copytree(straight_run[2], run, ignore=shutil.ignore_patterns("export*"))
    state = sorted(run.glob("experiment_state-*.json"))[-1]
    whole = state.read_bytes()
    state.write_bytes(whole[: len(whole) // 2])  # what a full disk left mid-write
    assert not backup_snapshot(run)  # a damaged snapshot never replaces the good copy
    assert len(read_run(run)) == 4  # status reads the copy
    note = repair_snapshot(run)
    assert note is not None and "cut short" in note and state.name in note
    # The copy (taken as the trials finished) is back in place, whole; the run reads again.
    assert state.read_bytes() == (run / SNAPSHOT_BACKUP_DIR / state.name).read_bytes()
    assert json.loads(state.read_text())["trial_data"] and len(read_run(run)) == 4
    assert repair_snapshot(run) is None  # whole again: nothing to do
