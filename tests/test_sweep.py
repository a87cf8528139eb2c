"""End-to-end sweeps on Ray Tune: local, resumed after a driver crash, on URI storage (the
multi-node sweep is tests/test_reliability.py's lost-worker test)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from sweeps.launch import resume_sweep, run_sweep
from sweeps.spec import load_spec
from sweeps.status import format_status, read_run
from tests.conftest import STRAIGHT_EPOCHS, reuse_straight_folds, tiny_spec

pytestmark = pytest.mark.slow
CAMSWEEP = Path(sys.executable).parent / "camsweep"


def test_smoke_sweep_runs_every_trial_and_prepares_each_fold_once(straight_run):
    tmp_path, raw, run_dir = straight_run
    raw = dict(raw)
    trials = read_run(run_dir)
    assert len(trials) == 4 and all(t.finished for t in trials), format_status(trials, ["p"])
    folds = json.loads((run_dir / "camsweep-folds.json").read_text())
    assert folds["trained"] == [2, 6] and folds["reused"] == []
    for t in trials:
        for name in ("results.json", "per_image.npz", "config.yaml", "split.csv"):
            assert (t.path / name).exists(), (t.path, name)
        assert 0 <= t.final["test_out/dice"] <= 1
        results = json.loads((t.path / "results.json").read_text())
        assert results["config"]["held_out_centre"] == t.config["held_out_centre"]
        assert results["config"]["masking"]["p"] == t.config["p"]
        assert (results["fold"] is None) == (t.config["p"] == 0.0)
        # checkpoints_to_keep (2) of its 3, the newest: older ones went once no snapshot named them
        kept = sorted(c.name for c in t.path.glob("checkpoint_*"))
        assert kept == ["checkpoint_000001", "checkpoint_000002"], (t.path, kept)
    table = format_status(trials, ["held_out_centre", "p"])
    assert "4 terminated" in table
    # A second sweep over the same data and folds reuses the classifiers and CAMs; it also
    # gives each architecture its own resources (one sweep, two trial shapes).
    raw.update(
        name="tiny-again",
        space={"arch": {"grid": ["unet", "deeplabv3plus"]}, "held_out_centre": {"grid": [2, 6]},
               "p": {"grid": [0.5]}},
        resources={"cpu": 1, "gpu": 0, "per_arch": {"deeplabv3plus": {"cpu": 2}}},
    )  # fmt: skip
    again = run_sweep(load_spec("tiny.yaml", raw=raw, local_gpus=0))
    folds = json.loads((again / "camsweep-folds.json").read_text())
    assert folds == {**folds, "trained": [], "reused": [2, 6]}
    # Two fold entries (beside them, hidden, the lock files their builds took).
    folds_dir = tmp_path / "results" / "folds"
    assert len([p for p in folds_dir.iterdir() if not p.name.startswith(".")]) == 2
    trials = read_run(again)
    assert len(trials) == 4 and all(t.finished for t in trials), format_status(trials, ["arch"])
    for t in trials:
        granted = json.loads((t.path / "results.json").read_text())["provenance"]["resources"]
        assert granted == {"CPU": 2.0 if t.config["arch"] == "deeplabv3plus" else 1.0}


def test_interrupted_sweep_resumes_without_rerunning_finished_trials(
    tmp_path, local_ray, monkeypatch, straight_run
):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    started = time.time()
    raw = tiny_spec(tmp_path)
    raw["train"]["epochs"] = STRAIGHT_EPOCHS
    raw["tracking"] = {"wandb": {"mode": "offline"}}
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    results = tmp_path / "results"
    reuse_straight_folds(straight_run, results)
    _kill_driver_after_first_result(spec_path, results, "tiny-*/*/results.json")
    done_before = {p.parent.name: p.read_text() for p in results.glob("tiny-*/*/results.json")}
    assert 1 <= len(done_before) < 4, done_before
    (run_dir,) = results.glob("tiny-*")
    resume_sweep(run_dir)
    trials = read_run(run_dir)
    assert len(trials) == 4 and all(t.finished for t in trials), format_status(trials, ["p"])
    for name, text in done_before.items():
        # Identical results, timings included: the finished trial was not trained or tested again.
        assert (run_dir / name / "results.json").read_text() == text
    # The killed trials' scratch checkpoint folders went with their next attempts.
    scratch = Path(tempfile.gettempdir()).glob("camsweep-ckpt-*")
    assert [p for p in scratch if p.stat().st_mtime >= started] == []
    # No W&B run was duplicated: every offline run folder belongs to one of the trials' run ids.
    from sweeps.tracking import offline_run_ids
    from trainables.wandb_runs import wandb_run_id

    # (The folds came from the cache, so no fold preparation logged a run.)
    ids = offline_run_ids(run_dir)
    assert ids == {wandb_run_id(run_dir.name, t.trial_id) for t in trials}
    # The exported table equals that of an uninterrupted sweep with the same seeds (one at a
    # time, W&B off: neither changes a result).
    from sweeps.cli import main

    straight = straight_run[2]
    tables = []
    for folder in (run_dir, straight):
        assert main(["export", str(folder), "--no-wandb", "--n-boot", "200"]) == 0
        text = (folder / "export" / "table.md").read_text()
        tables.append(text[text.index("## Out-of-distribution Dice") :].split("\n## ")[0])
    assert tables[0] == tables[1]


def _kill_driver_after_first_result(spec_path: Path, results: Path, pattern: str) -> None:
    """Runs `camsweep run` in its own process group and SIGKILLs it (and its Ray) as soon as one
    trial has finished."""
    # Ray's socket paths must stay short (< 108 bytes): pytest's tmp_path is too deep for them.
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    driver = subprocess.Popen(
        [CAMSWEEP, "run", spec_path],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "RAY_TMPDIR": ray_tmp},
        start_new_session=True,  # its own process group: the kill takes its Ray with it
    )
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and driver.poll() is None:
            if len(list(results.glob(pattern))) >= 1:
                break
            time.sleep(0.5)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _first_reports(trial_dir: Path) -> dict[int, float]:
    """epoch → val/dice of the first report of each epoch (Tune's result.json, appended across
    restores)."""
    out: dict[int, float] = {}
    for line in (trial_dir / "result.json").read_text().splitlines():
        row = json.loads(line)
        if "val/dice" in row:
            out.setdefault(int(row["epoch"]), row["val/dice"])
    return out


def test_a_killed_optuna_asha_sweep_resumes_exactly(tmp_path, local_ray, straight_run):
    import pickle

    import optuna

    db = f"sqlite:///{tmp_path / 'optuna.db'}"
    raw = tiny_spec(tmp_path, name="tpe")
    raw["train"]["epochs"] = 2
    raw["space"] = {
        "arch": {"grid": ["unet"]},
        "held_out_centre": {"grid": [2]},
        "p": {"uniform": [0.0, 1.0]},
    }
    raw["search"] = {"algorithm": "optuna", "num_samples": 4, "seed": 0, "storage": db}
    raw["scheduler"] = {"name": "asha", "grace_period": 1, "reduction_factor": 2}
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    results = tmp_path / "results"
    reuse_straight_folds(straight_run, results)
    _kill_driver_after_first_result(spec_path, results, "tpe-*/*/results.json")
    (run_dir,) = results.glob("tpe-*")
    done_before = {p.parent.name: p.read_text() for p in run_dir.glob("*/results.json")}
    assert 1 <= len(done_before) < 4, done_before
    resume_sweep(run_dir)
    trials = read_run(run_dir)
    assert len(trials) == 4 and all(t.status == "TERMINATED" for t in trials), format_status(
        trials, ["p"]
    )
    for name, text in done_before.items():
        assert (run_dir / name / "results.json").read_text() == text
    # The study: nothing left RUNNING, one completed study trial per Tune trial, same p.
    (summary,) = optuna.get_all_study_summaries(db)
    study = optuna.load_study(study_name=summary.study_name, storage=db)
    states = [t.state.name for t in study.trials]
    assert "RUNNING" not in states, states
    complete = sorted(t.params["p"] for t in study.trials if t.state.name == "COMPLETE")
    assert complete == sorted(t.config["p"] for t in trials)
    # ASHA's rungs hold every first report at each milestone, from before the kill too.
    (states_file,) = sorted(run_dir.glob("callback-states-*.pkl"))[-1:]
    callback_states = pickle.loads(states_file.read_bytes())
    (asha,) = [
        child
        for state in callback_states.values()
        if state and "children" in state
        for child in pickle.loads(state["children"]).values()
    ]
    rungs = dict(asha._brackets[0]._rungs)
    for t in trials:
        reports = _first_reports(t.path)
        for milestone, recorded in rungs.items():
            if milestone in reports:
                assert recorded[t.trial_id] == pytest.approx(reports[milestone]), (
                    t.trial_id,
                    milestone,
                )


def test_sweep_on_uri_storage_keeps_results_there(tmp_path, local_ray, monkeypatch):
    # file:// goes through the same pyarrow filesystem code path as s3:// or gs://.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    remote = tmp_path / "bucket"
    raw = tiny_spec(tmp_path, space={"arch": "unet", "held_out_centre": {"grid": [2]}, "p": 0.0})
    raw["storage"] = {"path": f"file://{remote}"}
    run_dir = run_sweep(load_spec("tiny.yaml", raw=raw, local_gpus=0))
    assert run_dir.is_relative_to(tmp_path / "home")  # the local mirror: spec, folds, W&B
    (stored,) = remote.glob("tiny-*")
    assert (stored / "camsweep-spec.yaml").exists()
    assert len(list(stored.glob("*/results.json"))) == 1
    (trial,) = read_run(stored)
    assert trial.finished
    # The stored run, as synced down from a bucket, exports its model like a local one.
    from sweeps.export import export_run
    from trainables.model_folder import read_model_folder

    export_run(stored, n_boot=200, out=tmp_path / "export")
    model = read_model_folder(tmp_path / "export" / "models" / "unet")
    assert [m.trial_id for m in model.members] == [trial.trial_id]
