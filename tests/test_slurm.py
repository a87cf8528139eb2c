"""Slurm: the job script, a fixed run folder that resumes, the embedded Ray on a shared node —
and sweeps submitted with sbatch to a real one-node Slurm started by the tests (Debian's
slurm-wlm and munge; skipped, saying why, where they are missing or cannot be started)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from sweeps.cli import main
from tests.conftest import tiny_spec

# --- the job script ---------------------------------------------------------------------------------


def _write_spec(tmp_path: Path, **changes) -> Path:
    raw = tiny_spec(tmp_path, **changes)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_rendered_script_starts_ray_across_nodes_and_resumes_its_fixed_run_folder(tmp_path):
    spec = _write_spec(tmp_path, resources={"cpu": 2, "gpu": 0.5})
    run_dir = tmp_path / "runs" / "paper"
    args = ["slurm", str(spec), "--nodes", "3", "--gpus-per-node", "2", "--time", "1-04:00:00"]
    args += ["--partition", "gpu", "--account", "lab", "--run-dir", str(run_dir), "--verbose"]
    assert main(args) == 0
    script = (run_dir / "slurm" / "camsweep.sbatch").read_text()
    for line in (
        "#SBATCH --nodes=3",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=8",  # 2 CPUs × the 4 half-GPU trials of 2 GPUs
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --time=1-04:00:00",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        f"#SBATCH --output={run_dir}/slurm/job-%j.out",
        "#SBATCH --requeue",
        "#SBATCH --signal=B:USR1@",
        f"#SBATCH --chdir={Path.cwd()}",
        f"RUN_DIR={run_dir}",
        f"SPEC={spec}",
        "RUN_FLAGS=(--verbose)",
        "EXPORT=1",
        f"CAMSWEEP=({Path(sys.executable).parent / 'camsweep'})",
        f"export PATH={Path(sys.executable).parent}:",
    ):
        assert line in script, line
    # Ray's Slurm recipe: a blocking head on the first node, a blocking worker on each other one.
    head = re.search(
        r'srun [^\n]*-w "\$head_node" \\\n\s+"\$RAY" start --head (.*?)--block &', script, re.S
    )
    assert head and '--num-cpus="$SLURM_CPUS_PER_TASK"' in head[1] and "--num-gpus" in head[1]
    assert '--port="$port"' in head[1] and "--include-dashboard=false" in head[1]
    worker = re.search(
        r'for node in "\$\{nodes\[@\]:1\}"; do\n\s+srun [^\n]*-w "\$node" \\\n\s+"\$RAY" start --address="\$ip_head"(.*?)--block &',
        script,
        re.S,
    )
    assert worker and '--num-cpus="$SLURM_CPUS_PER_TASK"' in worker[1]
    assert 'address=(--address "$ip_head")' in script
    assert '"${CAMSWEEP[@]}" run "$SPEC" --run-dir "$RUN_DIR" --resume-if-exists' in script
    assert 'scontrol requeue "$SLURM_JOB_ID"' in script
    assert (
        subprocess.run(["bash", "-n", str(run_dir / "slurm" / "camsweep.sbatch")]).returncode == 0
    )


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--gpus-per-node", "0"], "--gpus-per-node 0: a trial of this spec needs 0.5 GPU"),
        (["--gpus-per-node", "1", "--cpus-per-task", "1"], "--cpus-per-task 1: a trial"),
        (["--gpus-per-node", "1", "--time", "4h"], "--time '4h': expected HH:MM:SS"),
        (["--gpus-per-node", "1", "--nodes", "0"], "--nodes 0: must be at least 1"),
        (["--gpus-per-node", "1", "--partition", "a b"], "--partition 'a b': not a Slurm name"),
    ],
)
def test_bad_slurm_options_are_refused_naming_the_flag(tmp_path, capsys, flags, message):
    spec = _write_spec(tmp_path, resources={"cpu": 2, "gpu": 0.5})
    assert main(["slurm", str(spec), "--run-dir", str(tmp_path / "r"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# --- a fixed run folder -----------------------------------------------------------------------------


def test_run_dir_starts_when_new_resumes_when_started_and_refuses_another_spec(tmp_path, capsys):
    from sweeps.run_folder import folder_action
    from sweeps.spec import load_spec

    spec_path = _write_spec(tmp_path)
    spec = load_spec(spec_path, raw=yaml.safe_load(spec_path.read_text()), local_gpus=0)
    run_dir = tmp_path / "run"
    act = lambda **kw: folder_action(spec, str(spec_path), run_dir, resume_if_exists=True, **kw)  # noqa: E731
    assert act() == "start"  # no folder yet
    (run_dir / "slurm").mkdir(parents=True)
    assert act() == "start"  # only the job's script and logs
    from sweeps.launch import spec_text

    (run_dir / "camsweep-spec.yaml").write_text(spec_text(spec))
    assert act() == "start"  # killed before Tune started: start again there
    (run_dir / "tuner.pkl").write_bytes(b"")
    (run_dir / "experiment_state-2026.json").write_text("{}")
    assert act() == "resume"
    # Without --resume-if-exists an existing sweep is refused, before any work.
    assert main(["run", str(spec_path), "--run-dir", str(run_dir)]) == 2
    assert "already holds this sweep" in capsys.readouterr().err
    # Another spec: an error naming both files and what differs.
    other = tmp_path / "other.yaml"
    raw = yaml.safe_load(spec_path.read_text())
    raw["train"]["epochs"] = 3
    other.write_text(yaml.safe_dump(raw))
    assert main(["run", str(other), "--run-dir", str(run_dir), "--resume-if-exists"]) == 2
    err = capsys.readouterr().err
    assert f"{run_dir}/camsweep-spec.yaml and {other} differ in train.epochs" in err, err
    # A folder of something else is not written into.
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    assert main(["run", str(spec_path), "--run-dir", str(stranger), "--resume-if-exists"]) == 2
    assert "holds notes.txt but no camsweep-spec.yaml" in capsys.readouterr().err
    assert main(["run", str(spec_path), "--resume-if-exists"]) == 2
    assert "--resume-if-exists: needs --run-dir" in capsys.readouterr().err


def test_spec_differences_name_changed_keys_not_keys_a_newer_camsweep_adds():
    from sweeps.run_folder import spec_differences

    stored = {"name": "a", "train": {"epochs": 2, "lr": 0.1}}
    given = {"name": "a", "train": {"epochs": 3, "lr": 0.1}, "masking": {"new_key": 1}}
    assert spec_differences(stored, given) == ["train.epochs"]


# --- the embedded Ray on a shared machine ----------------------------------------------------------


def test_ray_temp_folder_is_per_user_and_job_and_short(monkeypatch, tmp_path):
    from sweeps.allocation import allocated_cpus, allocated_gpus, ray_temp_dir

    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    monkeypatch.setenv("TMPDIR", "/tmp")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    shutil.rmtree(f"/tmp/camsweep-ray-{os.getuid()}-4242", ignore_errors=True)
    folder = ray_temp_dir()
    assert folder == Path(f"/tmp/camsweep-ray-{os.getuid()}-4242")
    assert folder.stat().st_mode & 0o777 == 0o700
    folder.rmdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # pytest's folders are too deep for sockets
    assert ray_temp_dir() == Path(f"/tmp/camsweep-ray-{os.getuid()}-4242")
    Path(f"/tmp/camsweep-ray-{os.getuid()}-4242").rmdir()
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert allocated_cpus() == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,3")
    assert allocated_gpus() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert allocated_gpus() == 0


def test_embedded_ray_sizes_come_from_slurm_unless_the_spec_sets_them(monkeypatch):
    import ray

    from sweeps import launch
    from sweeps.spec import RayConfig

    asked = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: asked.update(kw))
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,2,3")
    launch.init_ray(RayConfig(), None)
    assert (asked["num_cpus"], asked["num_gpus"], asked["address"]) == (1, 3, "local")
    launch.init_ray(RayConfig(num_cpus=2, num_gpus=0), None)
    assert (asked["num_cpus"], asked["num_gpus"]) == (2, 0)


# --- a real one-node Slurm --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Slurm:
    """A one-node Slurm of its own: munged (own key and socket), slurmctld and slurmd, started in
    the foreground so each is exactly one process this fixture started, and stopped by it."""

    ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "GONE")
    COMMANDS = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "scontrol", "scancel", "srun")

    @staticmethod
    def unavailable() -> str | None:
        if os.geteuid() != 0:
            return "a test Slurm needs root (slurmd runs jobs as their users)"
        missing = [d for d in Slurm.COMMANDS if not shutil.which(d, path=_SBIN_PATH)]
        if missing:
            return (
                f"Slurm/munge not installed ({', '.join(missing)} missing): "
                "apt-get install -y slurm-wlm munge"
            )
        return None

    def __init__(self, folder: Path):
        self.folder = folder
        self.procs: list[subprocess.Popen] = []
        self.jobs: list[str] = []
        self.node = socket.gethostname().split(".")[0]
        self.env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}
        self.env["PATH"] = _SBIN_PATH

    def start(self) -> None:
        f = self.folder
        key = f / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        for sub in ("state", "spool"):
            (f / sub).mkdir()
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") >> 21  # half, in MiB
        (f / "slurm.conf").write_text(
            f"""ClusterName=camsweeptest
SlurmctldHost={self.node}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={f}/munge.sock
CredType=cred/munge
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
StateSaveLocation={f}/state
SlurmdSpoolDir={f}/spool
SlurmctldPidFile={f}/slurmctld.pid
SlurmdPidFile={f}/slurmd.pid
SlurmctldLogFile={f}/slurmctld.log
SlurmdLogFile={f}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
KillWait=2
SlurmdParameters=config_overrides
NodeName={self.node} CPUs={os.cpu_count()} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        )
        log = self.log = (f / "daemons.out").open("wb")
        for argv in (
            ["munged", "-F", "--force", f"--key-file={key}", f"--socket={f}/munge.sock"]
            + [f"--pid-file={f}/munged.pid", f"--seed-file={f}/munged.seed"]
            + [f"--log-file={f}/munged.log"],
            ["slurmctld", "-D", "-i"],
            ["slurmd", "-D", "-N", self.node],
        ):
            self.procs.append(
                subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)
            )
            time.sleep(1)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                break
            state = self.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip()
            if state == "idle":
                return
            time.sleep(1)
        raise RuntimeError(f"Slurm did not come up: {(f / 'daemons.out').read_text()[-2000:]}")

    def stop(self) -> None:
        # Jobs first (a failed test may leave one running): their processes belong to slurmd.
        for job in self.jobs:
            if self.state(job) not in self.ENDED:
                self.run("scancel", job, check=False)
                try:
                    self.wait(job, 30)
                except AssertionError:
                    pass
        for proc in reversed(self.procs):  # slurmd, slurmctld, munged: by the PIDs started here
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self.procs:
            self.log.close()

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, check=check)

    def submit(self, script: Path, **env: str) -> str:
        out = subprocess.run(
            ["sbatch", "--parsable", str(script)],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        self.jobs.append(out.strip().split(";")[0])
        return self.jobs[-1]

    def state(self, job: str) -> str:
        out = self.run("scontrol", "show", "job", job, "-o", check=False).stdout
        found = re.search(r"JobState=(\S+)", out)
        return found[1] if found else "GONE"

    def wait(self, job: str, timeout: float, until=None) -> str:
        """Polls until the job has ended (or ``until()`` holds); returns its state."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state(job)
            if state in self.ENDED:
                return state
            if until is not None and until():
                return state
            time.sleep(1)
        self.run("scancel", job, check=False)
        raise AssertionError(f"job {job} still {self.state(job)} after {timeout} s")


_SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])


@pytest.fixture(scope="module")
def slurm():
    reason = Slurm.unavailable()
    if reason:
        pytest.skip(reason)
    # Short: the munge socket lives here.
    cluster = Slurm(Path(tempfile.mkdtemp(prefix="slurm", dir="/tmp")))
    try:
        try:
            cluster.start()
        except (OSError, RuntimeError) as exc:
            pytest.skip(f"could not start a test Slurm: {exc}")
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.folder, ignore_errors=True)


def _job_log(run_dir: Path, job: str) -> str:
    log = run_dir / "slurm" / f"job-{job}.out"
    return log.read_text() if log.exists() else "(no log)"


def _sbatch_script(tmp_path: Path, **changes) -> tuple[Path, Path]:
    spec = _write_spec(tmp_path, **changes)
    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "slurm",
                str(spec),
                "--cpus-per-task",
                str(min(2, os.cpu_count() or 1)),
                "--run-dir",
                str(run_dir),
                "--no-export",
            ]
        )
        == 0
    )
    return run_dir / "slurm" / "camsweep.sbatch", run_dir


def test_a_cancelled_job_resubmitted_finishes_the_sweep_without_rerunning_finished_trials(
    tmp_path, slurm, monkeypatch
):
    from sweeps.status import format_status, read_run
    from sweeps.tracking import offline_run_ids
    from trainables.wandb_runs import wandb_run_id

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    space = {"arch": {"grid": ["unet"]}, "held_out_centre": {"grid": [2, 3, 4, 6]}, "p": 0.0}
    # Two trials at a time on the node's two CPUs: two are still to run when the first two are
    # done (3 epochs each: the kill lands mid-sweep even on a faster machine).
    train = {"epochs": 3, "batch_size": 8, "lr": 1e-3, "device": "cpu"}
    script, run_dir = _sbatch_script(
        tmp_path,
        space=space,
        train=train,
        tracking={"wandb": {"mode": "offline"}},
    )
    # The first job starts Ray the way Ray's Slurm recipe does (srun ray start --head --block,
    # the driver with --address), forced on this one node; the resubmitted one, left to itself
    # on one node, uses the embedded Ray. Both paths thus run the sweep from the script.
    first = slurm.submit(script, CAMSWEEP_SLURM_RAY="cluster")
    finished = lambda: list(run_dir.glob("*/results.json"))  # noqa: E731
    slurm.wait(first, 240, until=lambda: len(finished()) >= 1)
    # Killed at once, every step (as a preempted or timed-out job ends): a plain scancel lets
    # Ray's steps wind down for up to a minute, long enough to finish the sweep.
    slurm.run("scancel", "--signal=KILL", "--full", first)
    state = slurm.wait(first, 60)
    assert state in ("CANCELLED", "FAILED"), (state, _job_log(run_dir, first))
    assert "Ray head on" in _job_log(run_dir, first)
    done_before = {p.parent.name: p.read_text() for p in finished()}
    assert 1 <= len(done_before) < 4, (done_before, _job_log(run_dir, first))

    again = slurm.submit(script)  # the same script, as a user resubmits it
    assert slurm.wait(again, 240) == "COMPLETED", _job_log(run_dir, again)
    log = _job_log(run_dir, again)
    assert "resuming the sweep in" in log and "ends with status 0" in log, log
    trials = read_run(run_dir)
    assert len(trials) == 4 and all(t.finished for t in trials), format_status(trials, ["p"])
    for name, text in done_before.items():
        # Byte-identical results, timings included: not trained or tested again.
        assert (run_dir / name / "results.json").read_text() == text
    # One W&B run per trial: a resumed trial continued its run rather than opening another.
    ids = offline_run_ids(run_dir)
    assert ids == {wandb_run_id(run_dir.name, t.trial_id) for t in trials}
