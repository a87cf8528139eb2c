"""The embedded Ray that `camsweep run` starts must not be reachable from the network, and on a
shared machine takes only what the process was allotted."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux /proc")

# Runs in its own process so it starts a fresh Ray through camsweep's own init_ray, and the
# process tree it inspects holds only that Ray (GCS, raylet, agents, a worker). The process may
# run on one core only (as `taskset -c 0` or Slurm's affinity would allow), so the same start
# shows the CPUs, GPUs and temp folder it takes from its allotment.
PROBE = textwrap.dedent(
    """
    import json, os

    import ray
    from sweeps.launch import init_ray
    from sweeps.spec import RayConfig
    from tests.test_ray_exposure import listening_addresses

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    init_ray(RayConfig(object_store_mb=128), address=None, env={"CAMSWEEP_PROBE": "set"})
    # A worker is up and serving, with the sweep's environment; this process keeps its own.
    worker_env = ray.get(ray.remote(lambda: os.environ.get("CAMSWEEP_PROBE")).remote())
    print(json.dumps({
        "worker_env": worker_env,
        "driver_env": os.environ.get("CAMSWEEP_PROBE"),
        "listening": listening_addresses(os.getpid()),
        "CPU": ray.cluster_resources().get("CPU"),
        "GPU": ray.cluster_resources().get("GPU", 0),
        "temp": ray._private.worker._global_node.get_temp_dir_path(),
    }))
    ray.shutdown()
    """
)


def _listening_inodes() -> dict[str, str]:
    """inode → "ip:port" of every listening TCP socket on the machine."""
    found = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A":  # TCP_LISTEN
                continue
            hex_ip, hex_port = local.split(":")
            assert len(hex_ip) == width
            # /proc prints each 32-bit word in host (little-endian) byte order.
            raw = b"".join(bytes.fromhex(hex_ip[i : i + 8])[::-1] for i in range(0, width, 8))
            ip = ipaddress.ip_address(raw)
            found[inode] = f"{ip}:{int(hex_port, 16)}"
    return found


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name (field 2) may hold spaces; the parent pid follows the last ')'.
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def listening_addresses(root: int) -> dict[str, list[str]]:
    """Listening addresses of `root` and every process below it, by process name."""
    inodes = _listening_inodes()
    result: dict[str, list[str]] = {}
    for pid in _descendants(root):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                result.setdefault(f"{name}[{pid}]", []).append(inodes[target[8:-1]])
    return result


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.rsplit(":", 1)[0])
    if getattr(ip, "ipv4_mapped", None):
        ip = ip.ipv4_mapped
    return ip.is_loopback


@pytest.mark.slow
def test_embedded_ray_listens_on_loopback_only_and_takes_only_its_allotment():
    """Also: the sweep's worker environment reaches the workers, and only them."""
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        # A Slurm job's view: its id names the temp folder; no GPU is listed for it.
        "TMPDIR": "/tmp",
        "SLURM_JOB_ID": "77",
        "CUDA_VISIBLE_DEVICES": "",
    }
    env.pop("RAY_TMPDIR", None)
    env.pop("SLURM_CPUS_PER_TASK", None)
    temp = f"/tmp/camsweep-ray-{os.getuid()}-77"
    try:
        done = subprocess.run(
            [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=240, env=env
        )
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert (seen["worker_env"], seen["driver_env"]) == ("set", None), seen
    # The CPU affinity (one core), not the machine's cores; CUDA_VISIBLE_DEVICES, not torch's.
    assert seen["CPU"] == 1 and seen["GPU"] == 0, seen
    assert seen["temp"].startswith(temp), seen  # per user and job: two users' Rays never meet
    listening = seen["listening"]
    names = " ".join(listening)
    # The servers that matter were seen at all (else the check below would pass vacuously).
    assert "gcs_server" in names and "raylet" in names, listening
    exposed = {proc: [a for a in addrs if not _is_loopback(a)] for proc, addrs in listening.items()}
    assert not any(exposed.values()), exposed
