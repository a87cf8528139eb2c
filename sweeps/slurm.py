"""`camsweep slurm`: an sbatch script that runs a sweep, and continues it when run again.

The script runs ``camsweep run SPEC --run-dir RUN_DIR --resume-if-exists``: the same script
resubmitted, or requeued by Slurm (``--requeue``: node failure, preemption; and by the script
itself when the time limit nears), continues the same run folder, and no finished trial is
trained again. A one-node job uses camsweep's embedded Ray, which takes its CPUs and GPUs from
the allocation (:mod:`sweeps.allocation`); across nodes it starts Ray the way Ray documents for
Slurm (``ray start --head --block`` on the first node via ``srun``, workers on the others) and
runs the driver against it. Compute nodes run the Python environment the script was written from.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sweeps.spec import SLURM_DIR, SweepSpec

SCRIPT_NAME = "camsweep.sbatch"
# Slurm sends the batch shell SIGUSR1 this long before the time limit: enough for Tune to stop
# its trials and save the experiment state, and for the script to requeue the job.
STOP_GRACE_S = 120
_TIME = re.compile(r"^(\d+-)?\d{1,3}:\d{2}:\d{2}$")
_NAME = re.compile(r"^[A-Za-z0-9_.,:+@-]+$")  # partition lists, account names


@dataclass
class SlurmJob:
    """What the script asks Slurm for and what it runs (paths absolute)."""

    spec_path: Path
    run_dir: Path
    name: str
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    time: str | None = None
    partition: str | None = None
    account: str | None = None
    run_flags: list[str] = field(default_factory=list)  # --smoke, --storage X, --verbose
    export: bool = True
    workdir: Path = field(default_factory=Path.cwd)


def default_cpus(spec: SweepSpec, gpus_per_node: int) -> int:
    """CPUs for as many trials as one node's GPUs hold (one trial on a CPU-only node)."""
    most = spec.resources.most()
    trials = math.floor(gpus_per_node / most["gpu"]) if most["gpu"] > 0 else 1
    return max(1, math.ceil(most["cpu"]) * max(trials, 1))


def job_problems(spec: SweepSpec, job: SlurmJob) -> list[str]:
    """Options that cannot work for this spec, each naming its flag."""
    problems = []
    most = spec.resources.most()
    for flag, value, low in (
        ("--nodes", job.nodes, 1),
        ("--gpus-per-node", job.gpus_per_node, 0),
        ("--cpus-per-task", job.cpus_per_task, 1),
    ):
        if value < low:
            problems.append(f"{flag} {value}: must be at least {low}")
    if most["gpu"] > 0 and job.gpus_per_node < most["gpu"]:
        problems.append(
            f"--gpus-per-node {job.gpus_per_node}: a trial of this spec needs {most['gpu']:g} GPU "
            "(resources.gpu / per_arch) — ask for GPUs, or set resources.gpu: 0"
        )
    if job.cpus_per_task < most["cpu"]:
        problems.append(
            f"--cpus-per-task {job.cpus_per_task}: a trial of this spec needs {most['cpu']:g} "
            "CPUs (resources.cpu / per_arch)"
        )
    if job.time is not None and not _TIME.match(job.time):
        problems.append(f"--time {job.time!r}: expected HH:MM:SS or D-HH:MM:SS")
    for flag, value in (("--partition", job.partition), ("--account", job.account)):
        if value is not None and not _NAME.match(value):
            problems.append(f"{flag} {value!r}: not a Slurm name")
    for flag, path in (("--run-dir", job.run_dir), ("the working folder", job.workdir)):
        # #SBATCH lines are not parsed by a shell: a path with blanks would be cut there.
        if re.search(r"\s", str(path)):
            problems.append(f"{flag} {path}: #SBATCH lines cannot hold a path with blanks")
    return problems


def python_environment() -> tuple[Path | None, Path, list[str]]:
    """(virtualenv or None, its bin folder, the camsweep command) of this interpreter, so compute
    nodes run the same install. sys.executable is kept as it is: resolving the venv's python
    symlink would leave the venv."""
    bin_dir = Path(os.path.abspath(sys.executable)).parent
    venv = Path(sys.prefix) if sys.prefix != sys.base_prefix else None
    exe = bin_dir / "camsweep"
    command = [str(exe)] if exe.exists() else [os.path.abspath(sys.executable), "-m", "sweeps.cli"]
    return venv, bin_dir, command


def _q(value: str | Path) -> str:
    return shlex.quote(str(value))


def render_script(job: SlurmJob) -> str:
    """The sbatch script (bash). Bash 4.2 and later: no ``set -u`` (an empty array is unbound
    there)."""
    venv, bin_dir, command = python_environment()
    logs = job.run_dir / SLURM_DIR
    sbatch = [
        f"--job-name=camsweep-{job.name}",
        f"--nodes={job.nodes}",
        "--ntasks-per-node=1",  # one Ray node per Slurm node; Ray schedules the trials
        f"--cpus-per-task={job.cpus_per_task}",
    ]
    if job.gpus_per_node:
        sbatch.append(f"--gpus-per-node={job.gpus_per_node}")
    for key, value in (("time", job.time), ("partition", job.partition), ("account", job.account)):
        if value:
            sbatch.append(f"--{key}={value}")
    sbatch += [
        f"--chdir={job.workdir}",  # relative data paths in the spec resolve as when written
        f"--output={logs}/job-%j.out",
        "--open-mode=append",  # a requeued job (same id) appends to its log
        "--requeue",
        f"--signal=B:USR1@{STOP_GRACE_S}",
    ]
    env_lines = [f'export PATH={_q(bin_dir)}:"$PATH"']
    if venv is not None:
        env_lines.insert(0, f"export VIRTUAL_ENV={_q(venv)}")
    run_flags = " ".join(_q(f) for f in job.run_flags)
    header = "\n".join(f"#SBATCH {line}" for line in sbatch)
    return f"""#!/bin/bash
# Sweep {job.name} as a Slurm job — written by `camsweep slurm`.
#   sbatch {job.run_dir}/{SLURM_DIR}/{SCRIPT_NAME}   (or wherever this file is)
# Submitting this same script again, or Slurm requeueing it, continues {job.run_dir}:
# finished trials are kept, the others resume from their checkpoints. Log: {logs}/job-<id>.out
{header}
set -o pipefail

# The Python environment `camsweep slurm` ran in: every node runs the same install.
{chr(10).join(env_lines)}
CAMSWEEP=({" ".join(_q(c) for c in command)})
RAY={_q(bin_dir / "ray")}
PYTHON={_q(os.path.abspath(sys.executable))}
SPEC={_q(job.spec_path)}
RUN_DIR={_q(job.run_dir)}
RUN_FLAGS=({run_flags})
EXPORT={1 if job.export else 0}
GPUS_PER_NODE={job.gpus_per_node}

echo "camsweep: job $SLURM_JOB_ID (restart ${{SLURM_RESTART_COUNT:-0}}) on $SLURM_JOB_NODELIST: $RUN_DIR"

# Ray's temp folder, per user and job (as the embedded Ray's): two users' Rays on one node do not
# meet. Short, for Ray's Unix sockets (at most 107 characters).
ray_tmp="${{RAY_TMPDIR:-${{TMPDIR:-/tmp}}}}/camsweep-ray-$(id -u)-$SLURM_JOB_ID"
[ ${{#ray_tmp}} -le 40 ] || ray_tmp="/tmp/camsweep-ray-$(id -u)-$SLURM_JOB_ID"

address=()
ray_steps=()
stop_ray() {{
    for step in "${{ray_steps[@]}}"; do kill "$step" 2>/dev/null; done
    wait "${{ray_steps[@]}}" 2>/dev/null
}}
# One node: the embedded Ray, sized by the allocation. Several: Ray's Slurm recipe, a head
# started with srun on the first node and a worker on each other node, and the driver connects.
# (CAMSWEEP_SLURM_RAY=cluster takes the multi-node road on one node too, to try it out.)
if [ "${{CAMSWEEP_SLURM_RAY:-auto}}" = cluster ] || [ "${{SLURM_JOB_NUM_NODES:-1}}" -gt 1 ]; then
    mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
    head_node=${{nodes[0]}}
    # The head's address as Ray itself finds it (the driver looks for a raylet there);
    # `hostname --ip-address` can answer a loopback or IPv6 address.
    head_ip=$(srun --nodes=1 --ntasks=1 -w "$head_node" "$PYTHON" -c \\
        'from ray.util import get_node_ip_address as ip; print(ip())')
    # Ports from the job id, not Ray's fixed 6379 (and agent port 52365): two jobs may share a
    # node.
    port=$((20000 + SLURM_JOB_ID % 10000))
    ip_head="$head_ip:$port"
    # Ray's token authentication with a token of this job's own, which every srun step, the
    # driver and `ray health-check` read from the environment (no shared home needed).
    export RAY_AUTH_MODE=token
    RAY_AUTH_TOKEN=$("$PYTHON" -c 'import secrets; print(secrets.token_hex(32))')
    export RAY_AUTH_TOKEN
    echo "camsweep: Ray head on $head_node at $ip_head"
    srun --nodes=1 --ntasks=1 --cpus-per-task="$SLURM_CPUS_PER_TASK" -w "$head_node" \\
        "$RAY" start --head --node-ip-address="$head_ip" --port="$port" \\
        --dashboard-agent-listen-port=$((port + 1)) --include-dashboard=false \\
        --num-cpus="$SLURM_CPUS_PER_TASK" --num-gpus="$GPUS_PER_NODE" \\
        --temp-dir="$ray_tmp" --disable-usage-stats --block &
    ray_steps+=($!)
    for _ in $(seq 90); do
        "$RAY" health-check --address "$ip_head" >/dev/null 2>&1 && break
        kill -0 "${{ray_steps[0]}}" 2>/dev/null || break  # the head step has ended: it failed
        sleep 2
    done
    if ! "$RAY" health-check --address "$ip_head" >/dev/null 2>&1; then
        echo "camsweep: error: the Ray head on $head_node did not start (its error is above)" >&2
        stop_ray
        exit 1
    fi
    for node in "${{nodes[@]:1}}"; do
        srun --nodes=1 --ntasks=1 --cpus-per-task="$SLURM_CPUS_PER_TASK" -w "$node" \\
            "$RAY" start --address="$ip_head" --dashboard-agent-listen-port=$((port + 1)) \\
            --num-cpus="$SLURM_CPUS_PER_TASK" --num-gpus="$GPUS_PER_NODE" \\
            --temp-dir="$ray_tmp" --disable-usage-stats --block &
        ray_steps+=($!)
    done
    address=(--address "$ip_head")
fi

# Near the time limit Slurm signals this shell: stop the sweep cleanly (SIGUSR1 makes Tune save
# its state and end, as Ctrl+C does; a background job ignores SIGINT), then requeue the job.
requeue=0
on_time_limit() {{
    echo "camsweep: time limit near — stopping the sweep, then requeueing job $SLURM_JOB_ID"
    requeue=1
    kill -USR1 "$driver" 2>/dev/null
}}
trap on_time_limit USR1
"${{CAMSWEEP[@]}}" run "$SPEC" --run-dir "$RUN_DIR" --resume-if-exists --no-export \\
    "${{RUN_FLAGS[@]}}" "${{address[@]}}" &
driver=$!
# A trapped signal ends `wait` early: wait again until the driver has exited.
while :; do
    wait "$driver"
    status=$?
    kill -0 "$driver" 2>/dev/null || break
done
stop_ray
if [ "$requeue" = 1 ]; then
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
fi
if [ "$status" = 0 ] && [ "$EXPORT" = 1 ]; then
    "${{CAMSWEEP[@]}}" export "$RUN_DIR"
    status=$?
fi
echo "camsweep: job $SLURM_JOB_ID ends with status $status"
exit "$status"
"""


def write_script(job: SlurmJob, out: Path | None = None) -> Path:
    """Writes the script (default ``RUN_DIR/slurm/camsweep.sbatch``) and creates the log folder,
    which Slurm needs before the job starts."""
    (job.run_dir / SLURM_DIR).mkdir(parents=True, exist_ok=True)
    out = Path(out) if out else job.run_dir / SLURM_DIR / SCRIPT_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_script(job))
    out.chmod(0o755)
    return out


def submit(script: Path) -> str:
    """``sbatch SCRIPT``; returns sbatch's answer (``Submitted batch job N``)."""
    try:
        done = subprocess.run(["sbatch", str(script)], capture_output=True, text=True)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"--submit: sbatch is not on PATH here; submit {script} with sbatch on a login node"
        ) from None
    if done.returncode != 0:
        raise ValueError(f"--submit: sbatch {script} failed: {done.stderr.strip()}")
    return done.stdout.strip()
