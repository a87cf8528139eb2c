"""What this process was allotted on a shared machine: CPUs, GPUs, a temp folder of its own.

On a Slurm node or a shared workstation the embedded Ray must not claim every core and GPU of the
machine, nor share ``/tmp/ray`` with another user's Ray: it takes the CPU affinity (what
``taskset`` / Slurm's task plugin allows) and ``SLURM_CPUS_PER_TASK``, the GPUs listed in
``CUDA_VISIBLE_DEVICES``, and a temp folder named after the user and the Slurm job.
"""

from __future__ import annotations

import os
from pathlib import Path

# Ray puts Unix sockets at <temp>/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store:
# about 62 characters below the temp folder, and a socket path may have at most 107. A temp
# folder longer than this (a deep $TMPDIR) is replaced by one directly under /tmp.
MAX_TEMP_DIR_CHARS = 40


def allocated_cpus() -> int:
    """CPUs this process may run on: its affinity, capped by ``SLURM_CPUS_PER_TASK`` when set
    (a node without Slurm's affinity plugin still lets the job see every core)."""
    cpus = len(os.sched_getaffinity(0))
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm.isdigit() and int(slurm) > 0:
        cpus = min(cpus, int(slurm))
    return max(cpus, 1)


def allocated_gpus() -> int:
    """GPUs this process may use: those listed in ``CUDA_VISIBLE_DEVICES`` when it is set (Slurm
    sets it to the job's GPUs; an empty value hides them all), else every GPU torch sees."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = [d.strip() for d in visible.split(",") if d.strip()]
        # CUDA stops enumerating at the first invalid entry; "-1" is the usual "no GPU".
        return len(devices[: devices.index("-1")] if "-1" in devices else devices)
    import torch

    return torch.cuda.device_count()


def ray_temp_dir() -> Path:
    """A Ray temp folder of this user (and Slurm job), created mode 0700:
    ``$RAY_TMPDIR`` or ``$TMPDIR`` or ``/tmp``, then ``camsweep-ray-<uid>[-<job id>]``."""
    name = f"camsweep-ray-{os.getuid()}"
    job = os.environ.get("SLURM_JOB_ID", "").strip()
    if job:
        name += f"-{job}"
    base = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    folder = Path(os.path.abspath(base)) / name
    if len(str(folder)) > MAX_TEMP_DIR_CHARS:
        folder = Path("/tmp") / name
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder
