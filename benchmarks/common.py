"""Shared output format of the benchmarks: one JSON line per figure on stdout."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Benchmarks run as scripts (`python benchmarks/x.py`): make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


# The tree `make demo` writes (Makefile) and sweeps/demo.yaml reads at data.root.
DEMO_TREE = {"scale": 0.1, "size": (320, 256), "seed": 0}


def demo_tree(root: Path) -> Path:
    """Writes the demo's synthetic PolypGen tree at ``root`` unless one is there."""
    from trainables.data.synthetic import MANIFEST_NAME, generate

    if not (root / MANIFEST_NAME).exists():
        generate(root, **DEMO_TREE)
    return root


def machine() -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return (
        f"{platform.machine()} {os.cpu_count()} cpus, torch threads {torch.get_num_threads()}, "
        f"{device}, torch {torch.__version__}"
    )


def emit(name: str, value: float, unit: str, *, baseline: float | None = None, **extra) -> None:
    """Prints one figure; `ratio` is value / baseline when a baseline was measured in this run."""
    row = {"name": name, "value": round(value, 6), "unit": unit}
    if baseline is not None:
        row["baseline"] = round(baseline, 6)
        row["ratio"] = round(value / baseline, 4) if baseline else None
    row.update(extra)
    row["machine"] = machine()
    print(json.dumps(row), flush=True)


def rate(fn: Callable[[], int], *, min_seconds: float = 2.0) -> float:
    """Items per second of `fn` (which returns how many items it processed), repeated ≥ min_seconds."""
    done, start = 0, time.perf_counter()
    while True:
        done += fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed
