"""W&B tracking: offline runs kept with the results, one run per trial across retries, readable
history; redaction and modes."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest

from sweeps.launch import run_sweep
from sweeps.spec import load_spec
from sweeps.status import read_run
from sweeps.tracking import offline_run_dirs, read_wandb_run, resolve_mode
from tests.conftest import STRAIGHT_EPOCHS, tiny_spec
from trainables.wandb_runs import redact, wandb_run_id


def test_run_ids_are_deterministic_and_safe():
    assert wandb_run_id("demo-20261127-1", "ab12_00003") == "demo-20261127-1-ab12_00003"
    assert wandb_run_id("x/y z", "t") == "x-y-z-t"
    long = wandb_run_id("s" * 100, "t1")
    assert len(long) <= 64 and long == wandb_run_id("s" * 100, "t1") != wandb_run_id(
        "s" * 100, "t2"
    )


def test_auto_mode_follows_the_api_key(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert resolve_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"
    assert resolve_mode("disabled") == "disabled"


def test_redact_removes_secret_looking_values():
    tree = {"wandb": {"api_key": "abc", "project": "p"}, "token": 1, "runs": [{"password": "x"}]}
    assert redact(tree) == {
        "wandb": {"api_key": "<redacted>", "project": "p"},
        "token": "<redacted>",
        "runs": [{"password": "<redacted>"}],
    }


def test_redact_matches_secret_names_not_substrings():
    # The fold preparation logs its cache key; that is no secret (it was hidden before).
    tree = {"fold_key": "C3-ab12", "monkey": 1, "github_token": "t", "AWS-Secret-Access-Key": "s"}
    assert redact(tree) == {
        "fold_key": "C3-ab12",
        "monkey": 1,
        "github_token": "<redacted>",
        "AWS-Secret-Access-Key": "<redacted>",
    }


def test_offline_run_file_reads_back(tmp_path):
    import wandb

    run = wandb.init(
        project="p", id="rid-1", dir=str(tmp_path), mode="offline", group="g", job_type="unet",
        tags=["C1"], config={"masking": {"p": 0.5}}, settings=wandb.Settings(console="off"),
    )  # fmt: skip
    for epoch in (1, 2):
        run.log({"epoch": epoch, "val/dice": epoch / 10})
    run.finish()
    (folder,) = offline_run_dirs(tmp_path)
    # wandb-core writes the file from its own process; give a loaded machine a moment to flush.
    deadline = time.monotonic() + 20
    while True:
        info = read_wandb_run(next(folder.glob("run-*.wandb")))
        if len(info["history"]) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert (info["run_id"], info.get("group"), info.get("job_type"), info.get("tags")) == (
        "rid-1", "g", "unet", ["C1"],
    )  # fmt: skip
    assert info["config"]["masking"] == {"p": 0.5}
    assert [(h["epoch"], h["val/dice"]) for h in info["history"]] == [(1, 0.1), (2, 0.2)]


@pytest.mark.slow
def test_retried_trials_continue_their_wandb_run_and_resume_past_a_corrupted_checkpoint(
    tmp_path, local_ray, monkeypatch, straight_run
):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    raw = tiny_spec(
        tmp_path,
        space={"arch": "unet", "held_out_centre": {"grid": [2]}, "p": {"grid": [0.0, 0.5]}},
    )
    raw["train"].update(epochs=STRAIGHT_EPOCHS, checkpoint_every=1)
    # The uninterrupted yardstick: the straight run's C2 trials (same configs; checkpoints and
    # W&B change no result). This sweep's storage is its own, so it prepares (and logs) its fold.
    assert STRAIGHT_EPOCHS == 3
    clean = {
        t.config["p"]: t for t in read_run(straight_run[2]) if t.config["held_out_centre"] == 2
    }
    # Every trial, at the start of epoch 3, truncates its stored epoch-2 checkpoint (as a crash
    # mid-copy would leave it) and crashes, once; Tune retries it from its checkpoints.
    raw["fault"] = {"raise_at_epoch": 3, "corrupt_checkpoint": True, "once": True}
    raw["tracking"] = {"wandb": {"mode": "auto", "project": "camsweep-test"}}
    run_dir = run_sweep(load_spec("t.yaml", raw=raw, local_gpus=0))
    trials = read_run(run_dir)
    assert all(t.finished and t.failures == 1 for t in trials), [t.error for t in trials]
    for trial in trials:
        # The retry found epoch 2's checkpoint corrupt, resumed from epoch 1's and redid epoch
        # 2: Tune restored its iteration count (2) with the checkpoint, then counted epochs 2
        # and 3. (Resuming from epoch 2's would end at 3, starting afresh at 5. Tune's
        # result.json is no witness: on a restore Tune replaces it with the last synced copy.)
        assert trial.last_result["epoch"] == 3 and trial.last_result["training_iteration"] == 4
        # …and ended exactly where an uninterrupted trial ends (resume is deterministic).
        same = clean[trial.config["p"]].final
        assert trial.final["test_out/dice"] == pytest.approx(same["test_out/dice"], abs=1e-6)
        assert trial.final["val/dice"] == pytest.approx(same["val/dice"], abs=1e-6)
    runs = defaultdict(list)
    for folder in offline_run_dirs(run_dir):
        info = read_wandb_run(next(folder.glob("run-*.wandb")))
        runs[info["run_id"]].append(info)
    trial_ids = {wandb_run_id(run_dir.name, t.trial_id): t for t in trials}
    assert set(trial_ids) <= set(runs)  # every trial has its run, under its deterministic id
    assert f"{run_dir.name}-fold-C2" in runs  # the fold preparation's run
    for run_id, trial in trial_ids.items():
        infos = runs[run_id]
        assert len(infos) == 2  # first attempt + retry, both continuing the same run id
        first = infos[0]
        assert first["group"] == run_dir.name and first["job_type"] == "unet"
        assert "C2" in first["tags"] and first["config"]["masking"]["p"] == trial.config["p"]
        history = [h for info in infos for h in info["history"] if "val/dice" in h]
        assert history and all(0 <= h["val/dice"] <= 1 for h in history)
        logged = {k.split("/")[0] for info in infos for h in info["history"] for k in h}
        assert {"examples", "per_image"} <= logged  # example strips and the per-image table
    # Every dashboard panel refers to a key the runs really logged.
    from sweeps.dashboard import build_workspace

    known: set[str] = set()
    for infos in runs.values():
        for info in infos:
            known |= set(_flatten(info["config"])) | set(info["summary"])
            for h in info["history"]:
                known |= set(h) | {k.split("/_")[0] for k in h}
    _, plan = build_workspace("entity", "camsweep-test", run_dir.name)
    for section, title, keys in plan.panels:
        missing = [k for k in keys if k not in known]
        assert not missing, f"[{section}] {title}: {missing} never logged"


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and k != "_wandb":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_dashboard_without_a_key_describes_the_workspace(tmp_path, monkeypatch, capsys):
    from sweeps.cli import main

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run_dir = tmp_path / "demo-20261127-000000"
    run_dir.mkdir()
    (run_dir / "camsweep-spec.yaml").write_text("name: demo\n")
    assert main(["dashboard", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "workspace 'camsweep demo-20261127-000000'" in out
    assert "[Generalisation] p, threshold, learning rate → validation Dice: masking.p" in out
    assert "not saved" in out


def test_offline_run_file_cut_short_still_reads(tmp_path):
    import wandb

    run = wandb.init(project="p", id="cut-1", dir=str(tmp_path), mode="offline",
                     settings=wandb.Settings(console="off"))  # fmt: skip
    for epoch in range(1, 4):
        run.log({"epoch": epoch, "val/dice": epoch / 10})
    run.finish()
    (folder,) = offline_run_dirs(tmp_path)
    path = next(folder.glob("run-*.wandb"))
    full = read_wandb_run(path)
    cut = tmp_path / "run-cut-1.wandb"
    cut.write_bytes(path.read_bytes()[:20])  # a process killed right after opening its run
    assert read_wandb_run(cut)["run_id"] == "cut-1" == full["run_id"]
    assert read_wandb_run(cut)["history"] == []
