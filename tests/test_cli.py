"""The `camsweep` command line as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from sweeps.cli import main
from tests.conftest import write_frame

CAMSWEEP = Path(sys.executable).parent / "camsweep"


def test_synth_then_data_check_via_console_script(tmp_path):
    out = tmp_path / "ds"
    run = subprocess.run(
        [CAMSWEEP, "synth", "--out", out, "--scale", "0.02", "--size", "48x40", "--seed", "3"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    # round(0.02 * [256, 301, 457, 227, 208, 88]) = 5, 6, 9, 5, 4, 2
    assert "wrote 31 synthetic frames" in run.stdout
    check = subprocess.run([CAMSWEEP, "data", "check", out], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "no problems found" in check.stdout
    lines = {ln.split()[0]: ln.split() for ln in check.stdout.splitlines() if ln.strip()}
    assert lines["C3"][1] == "9" and lines["C6"][1] == "2"


def test_data_check_reports_problems_with_exit_1(tmp_path, capsys):
    img, _ = write_frame(tmp_path, 1, "C1_P001_0001")
    img.write_bytes(b"garbage")
    assert main(["data", "check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "1 problem(s):" in out and str(img) in out


def test_user_errors_are_one_line_without_traceback(tmp_path):
    run = subprocess.run(
        [CAMSWEEP, "synth", "--out", tmp_path, "--size", "64by48"], capture_output=True, text=True
    )
    assert run.returncode == 2
    assert "camsweep synth: error:" in run.stderr and "64by48" in run.stderr
    assert "Traceback" not in run.stderr
    run = subprocess.run(
        [CAMSWEEP, "data", "check", tmp_path / "none"], capture_output=True, text=True
    )
    assert run.returncode == 1 and "data root does not exist" in run.stdout


def test_status_and_file_only_validate_do_not_load_torch(tmp_path):
    """Reading a run or checking a spec file is instant: no torch, no Ray, no W&B."""
    run = tmp_path / "run"
    (run / "t0").mkdir(parents=True)
    spec = {"name": "r", "space": {"arch": {"grid": ["unet"]}, "p": {"grid": [0.0, 0.5]}}}
    (run / "camsweep-spec.yaml").write_text(yaml.safe_dump(spec))
    trial = {"trial_id": "ab_00000", "status": "RUNNING", "config": {"arch": "unet", "p": 0.5},
             "relative_logdir": "t0"}  # fmt: skip
    meta = {"last_result": {"epoch": 3, "val/dice": 0.25}}
    state = {"trial_data": [[json.dumps(trial), json.dumps(meta)]]}
    (run / "experiment_state-2026-12-01_00-00-00.json").write_text(json.dumps(state))
    code = (
        "import sys; from sweeps.cli import main; rc = main(sys.argv[1:]); "
        "heavy = [m for m in ('torch', 'ray', 'wandb') if m in sys.modules]; "
        "assert not heavy, heavy; sys.exit(rc)"
    )
    for argv in (["status", str(run)], ["validate", "--file-only", "sweeps/paper-table1.yaml"]):
        done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
        assert done.returncode == 0, (argv, done.stderr[-2000:])
    assert (
        "ab_00000"
        in subprocess.run(
            [sys.executable, "-c", code, "status", str(run)], capture_output=True, text=True
        ).stdout
    )
