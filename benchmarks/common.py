"""Shared output format of the benchmarks: one JSON line per figure on stdout, each also appended
to the results file (``CAMSWEEP_BENCH_RESULTS``, default ``benchmarks/results.jsonl``, tracked)."""

from __future__ import annotations

import functools
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS_ENV = "CAMSWEEP_BENCH_RESULTS"
RUN_ID_ENV = "CAMSWEEP_BENCH_RUN_ID"  # set by benchmarks.run: one id for all its benchmarks
# Tracked: the project's measured history, from which the README's tables are generated.
DEFAULT_RESULTS = REPO / "benchmarks" / "results.jsonl"

# The tree `make demo` writes (Makefile) and sweeps/demo.yaml reads at data.root.
DEMO_TREE = {"scale": 0.1, "size": (320, 256), "seed": 0}


def demo_tree(root: Path) -> Path:
    """Writes the demo's synthetic PolypGen tree at ``root`` unless one is there."""
    from trainables.data.synthetic import MANIFEST_NAME, generate

    if not (root / MANIFEST_NAME).exists():
        generate(root, **DEMO_TREE)
    return root


def with_demo_tree(raw: dict, folder: Path) -> None:
    """Points a spec's ``data.root`` at the demo's tree written under ``folder`` when the root it
    names is missing (the demo spec before `make demo` has written ``demo-data``)."""
    root = raw["data"].get("root")
    if root is not None and not Path(root).exists():
        raw["data"]["root"] = str(demo_tree(folder))


def machine() -> str:
    """The machine a figure was measured on: architecture, cores, torch threads, device, torch."""
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return (
        f"{platform.machine()} {os.cpu_count()} cpus, torch threads {torch.get_num_threads()}, "
        f"{device}, torch {torch.__version__}"
    )


def parameters_m(model) -> float:
    """A model's parameter count in millions, on each of its figures: a variant's definition
    can change (the tiny DeepLabV3+ went from 11.3 M to 0.72 M parameters), and the report keeps
    figures of different models apart by it."""
    return round(sum(p.numel() for p in model.parameters()) / 1e6, 2)


def results_path() -> Path:
    """Where ``emit`` appends its rows: ``$CAMSWEEP_BENCH_RESULTS`` or the default."""
    return Path(os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS)


def new_run_id() -> str:
    """A run id for a run that was given none: the UTC time it started."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


@functools.cache
def run_id() -> str:
    """This process's run id: the runner's, else one fixed at the first figure it emits."""
    return os.environ.get(RUN_ID_ENV) or new_run_id()


def benchmark_module() -> str:
    """The module running as ``__main__`` (``benchmarks.data_path`` under ``python -m``)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec.name if spec is not None else Path(sys.argv[0]).stem


def emit(name: str, value: float, unit: str, *, baseline: float | None = None, **extra) -> None:
    """Prints one figure; `ratio` is value / baseline when a baseline was measured in this run.
    The results file gets the same row plus the benchmark module, the run id and the UTC time."""
    row = {"name": name, "value": round(value, 6), "unit": unit}
    if baseline is not None:
        row["baseline"] = round(baseline, 6)
        row["ratio"] = round(value / baseline, 4) if baseline else None
    row.update(extra)
    row["machine"] = machine()
    print(json.dumps(row), flush=True)
    record(row)


def record(row: dict) -> None:
    """Appends ``row`` with its provenance to the results file, one JSON line."""
    stamped = {
        **row,
        "benchmark": benchmark_module(),
        "run_id": run_id(),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    path = results_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # One write per line in append mode: rows of concurrent benchmarks do not interleave.
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(stamped) + "\n")


def rate(fn: Callable[[], int], *, min_seconds: float = 2.0) -> float:
    """Items per second of `fn` (which returns how many items it processed), repeated ≥ min_seconds."""
    done, start = 0, time.perf_counter()
    while True:
        done += fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed
