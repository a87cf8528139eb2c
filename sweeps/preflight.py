"""Preflight: before any fold is prepared or any trial starts, one small Ray task on every alive
node checks what that node's work will need —

- the pretrained weights load without network (in the caches trials read, or as local files);
- the data root is readable there and holds the dataset's centres (names listed, nothing
  decoded);
- the run folder and the fold cache are writable from there (a temp file created and deleted);
- with GPU trials, Ray's GPUs there are visible to torch and each has room for the trials
  packed on it, by the memory floor ``benchmarks.gpu`` reports (``trainables.memory``).

Every problem of every node is gathered and reported at once, each naming its node, and the sweep
stops before anything is computed: a fault on one node of a cluster otherwise shows up as trials
failing there one by one, hours in. Nodes that join later (an autoscaler) are not checked.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sweeps.weights import Caches, FileWeight, Weight, encoder_of, required_weights
from trainables.config import DataConfig

if TYPE_CHECKING:
    from sweeps.spec import SweepSpec

# Long enough for a worker to start and import torch on a slow shared filesystem; a node whose
# GPUs are all held by other Ray work would otherwise keep the sweep waiting without a word.
PREFLIGHT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class GpuNeed:
    """What each GPU of a node must have free: the most memory the trials packed on one GPU
    need, and why (for the message)."""

    gib: float
    why: str


@dataclass(frozen=True)
class NodeChecks:
    """Everything a node is checked for; built on the driver, shipped to every node."""

    weights: tuple[Weight, ...] = ()
    cache: str | None = None  # the spec's weights.cache (absolute); None: the node's defaults
    fetch: str = "camsweep weights fetch SPEC"  # the command that fetches the missing weights
    data: DataConfig | None = None  # None: the nodes read no data files (synthetic data)
    centres: tuple[int, ...] = ()  # the centres the driver found in the data
    writable: tuple[str, ...] = ()  # local folders the node's tasks write into
    gpu: GpuNeed | None = None  # None: the trials train on CPUs


def gpu_need(spec: SweepSpec, frames: int) -> GpuNeed | None:
    """The free memory every GPU needs for the sweep's trials (None for a CPU-only sweep): per
    architecture with a GPU share, the trials one GPU holds (1 / share) × its memory floor at the
    sweep's image size and largest batch; the largest of these."""
    from trainables.memory import memory_floor_gib
    from trainables.models import build_model

    if spec.train.device == "cpu":
        return None
    batch = max(spec.values_of("batch_size", spec.train.batch_size))
    worst: GpuNeed | None = None
    for arch in spec.values_of("arch", spec.model.arch):
        share = spec.resources.of(arch)["gpu"]
        if share <= 0:
            continue
        for encoder in spec.values_of("encoder_name", spec.model.encoder_name):
            cfg = spec.trial_config({"arch": arch, "encoder_name": encoder})
            # Random weights: the floor does not depend on them, and nothing is downloaded.
            model = build_model(
                arch, variant=cfg.model.variant, encoder_name=encoder_of(cfg.model, arch)
            )
            floor = memory_floor_gib(model, cfg.data.image_size, batch, frames)
            packed = max(1, int(1 / share + 1e-9))
            if worst is None or packed * floor > worst.gib:
                worst = GpuNeed(
                    packed * floor,
                    f"{packed} {arch} trial(s) of {share:g} GPU × {floor:.2f} GiB memory floor "
                    f"(batch {batch}, {cfg.data.image_size} px)",
                )
    return worst


def preflight_checks(
    spec: SweepSpec,
    *,
    centres: list[int],
    frames: int,
    writable: list[Path | str],
    fetch: str = "camsweep weights fetch SPEC",
) -> NodeChecks:
    """The checks for this sweep (on the driver: resolves the weights, measures memory floors)."""
    return NodeChecks(
        weights=tuple(required_weights(spec)),
        cache=spec.weights_cache(),
        fetch=fetch,
        data=None if spec.data.source == "synthetic" else spec.data,
        centres=tuple(centres),
        writable=tuple(dict.fromkeys(str(w) for w in writable if "://" not in str(w))),
        gpu=gpu_need(spec, frames) if spec.resources.most()["gpu"] > 0 else None,
    )


# --- on the node ----------------------------------------------------------------------------------


def weight_problems(checks: NodeChecks) -> list[str]:
    if not checks.weights:
        return []
    caches = Caches.here(checks.cache)
    out = []
    for weight in checks.weights:
        missing = weight.missing(caches)
        if missing is None:
            continue
        if isinstance(weight, FileWeight):
            out.append(f"{weight.key}: {weight.what}: {missing}")
        else:
            out.append(
                f"{weight.key}: {weight.what} from {weight.source()}: not on this node "
                f"({missing}) — run `{checks.fetch}` where there is internet"
            )
    return out


def data_problems(data: DataConfig | None, centres: tuple[int, ...]) -> list[str]:
    if data is None:
        return []
    from trainables.data.polypgen import DatasetError
    from trainables.data.source import data_root, scan_data

    if data.sources:
        roots = [
            (f"data.sources[{i}].root {s.root}", Path(s.root)) for i, s in enumerate(data.sources)
        ]
    else:
        root = data_root(data)  # polypgen: the configured folder, nothing generated
        roots = [(f"data.manifest {data.manifest}" if data.manifest else f"data.root {root}", root)]
    missing = [
        f"{what}: not found on this node — mount the dataset at the same path everywhere"
        for what, root in roots
        if not root.expanduser().is_dir()
    ]
    if missing:
        return missing
    what = roots[0][0] if len(roots) == 1 else "data.sources"
    try:
        manifest, _ = scan_data(data)  # names only; the driver has reported any other problem
    except (DatasetError, OSError) as exc:
        return [f"{what}: not readable on this node ({exc})"]
    lacking = sorted(set(centres) - set(manifest.centres))
    if lacking:
        return [
            f"{what}: centre(s) {', '.join(f'C{c}' for c in lacking)} missing on this node "
            f"(it has {', '.join(f'C{c}' for c in manifest.centres) or 'none'}) — another copy "
            "of the dataset, or an incomplete one"
        ]
    return []


def storage_problems(folders: tuple[str, ...]) -> list[str]:
    out = []
    for folder in folders:
        probe = Path(folder)
        # A folder not created yet is created in its nearest existing parent: test that one.
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            fd, name = tempfile.mkstemp(prefix=".camsweep-preflight-", dir=probe)
            os.close(fd)
            os.unlink(name)
        except OSError as exc:
            out.append(
                f"storage {folder}: not writable from this node ({probe}: "
                f"{exc.strerror or exc}) — a shared folder every node can write, e.g. NFS"
            )
    return out


def gpu_problems(need: GpuNeed | None, gpus: int) -> list[str]:
    """``gpus``: the GPUs Ray offers on this node (the task holds them all, so
    CUDA_VISIBLE_DEVICES names exactly those)."""
    if need is None or gpus == 0:
        return []  # a node without GPUs gets no GPU trial
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if visible < gpus:
        return [
            f"GPU: Ray offers {gpus} GPU(s) here but torch sees {visible} "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}) — start Ray "
            "with --num-gpus the node really has, or check its CUDA driver"
        ]
    out = []
    for i in range(gpus):
        free, total = torch.cuda.mem_get_info(i)
        if free < need.gib * 2**30:
            out.append(
                f"GPU {i} ({torch.cuda.get_device_name(i)}): {free / 2**30:.1f} of "
                f"{total / 2**30:.1f} GiB free, but {need.why} need at least {need.gib:.1f} GiB "
                "— other processes hold it (nvidia-smi), or give each trial a larger share "
                "(resources.gpu, resources.per_arch.<arch>.gpu) or a smaller train.batch_size"
            )
    return out


def node_problems(checks: NodeChecks, gpus: int = 0) -> list[str]:
    """Every problem of the node this runs on, as seen from there."""
    return [
        *weight_problems(checks),
        *data_problems(checks.data, checks.centres),
        *storage_problems(checks.writable),
        *gpu_problems(checks.gpu, gpus),
    ]


# --- on the driver --------------------------------------------------------------------------------


def node_label(node: dict) -> str:
    return f"{node.get('NodeManagerHostname', '?')} ({node.get('NodeManagerAddress', '?')})"


def gather(found: dict[str, list[str]]) -> list[str]:
    """One line per problem, each naming its node."""
    return [f"node {label}: {problem}" for label, problems in found.items() for problem in problems]


def run_preflight(checks: NodeChecks, *, timeout_s: float = PREFLIGHT_TIMEOUT_S) -> list[str]:
    """Runs :func:`node_problems` on every alive node of the connected Ray; returns all problems."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # No CPU asked, so it runs even where all CPUs are taken or none is offered. A worker that
    # touches CUDA exits afterwards (max_calls 1), so no CUDA context of it stays in Ray's worker
    # pool beside the trials; one that does not goes back to the pool, where the fold
    # preparations reuse it instead of starting a fresh process.
    on_cpu = ray.remote(num_cpus=0, max_retries=0)(node_problems)
    on_gpu = ray.remote(num_cpus=0, max_retries=0, max_calls=1)(node_problems)
    pending = {}
    for node in (n for n in ray.nodes() if n.get("Alive")):
        gpus = int(node.get("Resources", {}).get("GPU", 0)) if checks.gpu else 0
        strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        task = on_gpu if gpus else on_cpu
        ref = task.options(num_gpus=gpus, scheduling_strategy=strategy).remote(checks, gpus)
        pending[ref] = node_label(node)
    done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=timeout_s)
    found: dict[str, list[str]] = {}
    for ref in pending:
        label = pending[ref]
        if ref not in done:
            ray.cancel(ref, force=True)
            found[label] = [
                f"the preflight did not finish within {timeout_s:g} s (its GPUs held by other "
                "Ray work, or the node overloaded or unreachable)"
            ]
            continue
        try:
            found[label] = ray.get(ref)
        except Exception as exc:  # the node died, or the check itself failed there
            last = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
            found[label] = [f"the preflight failed there: {type(exc).__name__}: {last}"]
    return gather(found)
