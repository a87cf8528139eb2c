"""Runs registered benchmarks, each in a fresh process, under one run id; stops at the first that
fails, with a non-zero exit. Their figures are appended to the results file
(``CAMSWEEP_BENCH_RESULTS``, default ``benchmarks/results.jsonl``).

    python -m benchmarks.run [NAME ...]     # all registered benchmarks by default
    python -m benchmarks.run --list
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence

from benchmarks import BENCHMARKS, Benchmark, benchmark
from benchmarks.common import RUN_ID_ENV, new_run_id, results_path


def selected(names: Sequence[str]) -> list[Benchmark]:
    """The benchmarks called ``names`` in the order given, or all registered ones if none."""
    return [benchmark(n) for n in names] if names else list(BENCHMARKS)


def run_one(bench: Benchmark, run_id: str) -> int:
    """Runs ``bench`` as ``python -m benchmarks.<name>`` with ``run_id``; its exit status."""
    print(f"# {bench.module} (run {run_id})", file=sys.stderr, flush=True)
    env = {**os.environ, RUN_ID_ENV: run_id}
    # A process per benchmark, as `make bench` always ran them: no state (torch threads, Ray,
    # allocator caches) carries over from one to the next.
    return subprocess.run([sys.executable, "-m", bench.module], env=env, check=False).returncode


def run_all(benches: Sequence[Benchmark], run_id: str) -> int:
    """Runs ``benches`` in order; 0, or the exit status (≥ 1) of the first that failed."""
    for bench in benches:
        status = run_one(bench, run_id)
        if status != 0:
            print(f"# {bench.module} failed (exit {status})", file=sys.stderr)
            return status if status > 0 else 1  # < 0: killed by a signal
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: runs the named (or all) benchmarks; the exit status of the run."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="registered benchmarks")
    parser.add_argument("--list", action="store_true", help="list them and exit")
    args = parser.parse_args(argv)
    if args.list:
        for b in BENCHMARKS:
            print(f"{b.name}\t{b.compares}")
        return 0
    try:
        benches = selected(args.names)
    except KeyError as exc:
        parser.error(exc.args[0])
    # One id for every benchmark of this run (`make bench` may pass its own).
    run_id = os.environ.get(RUN_ID_ENV) or new_run_id()
    status = run_all(benches, run_id)
    print(f"# results: {results_path()} (run {run_id})", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
