"""Sweep overhead of the demo sweep: time to the first reported result, the share of wall time
spent outside trials' training steps (Ray start-up, data and fold preparation, scheduling,
validation, checkpointing, testing), and fold reuse: classifier trainings and CAM passes per
sweep (one per fold) against the trials that use them.

    python -m benchmarks.sweep_overhead [--spec sweeps/demo.yaml]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.common import emit, with_demo_tree
from sweeps.launch import run_sweep
from sweeps.spec import load_spec, read_spec_yaml
from sweeps.status import read_run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", default="sweeps/demo.yaml")
    args = parser.parse_args()
    raw = read_spec_yaml(args.spec)
    with tempfile.TemporaryDirectory() as tmp:
        raw["storage"] = {"path": tmp}
        raw["data"]["cache_dir"] = str(Path(tmp) / "cache")  # cold caches: the first-run cost
        with_demo_tree(raw, Path(tmp) / "demo-data")
        raw["tracking"] = {"wandb": {"mode": "disabled"}}
        spec = load_spec(args.spec, raw=raw, local_gpus=0)
        start = time.time()
        run_dir = run_sweep(spec)
        wall = time.time() - start
        trials = read_run(run_dir)
        first = min(
            json.loads((t.path / "result.json").read_text().splitlines()[0])["timestamp"]
            for t in trials
        )
        train_s = sum(
            h["time/train_epoch_s"]
            for t in trials
            for h in json.loads((t.path / "results.json").read_text())["history"]
        )
        folds = json.loads((run_dir / "camsweep-folds.json").read_text())
        # Trials that used a fold's classifier and CAMs: without reuse, each would train one.
        masked = sum(
            json.loads((t.path / "results.json").read_text())["fold"] is not None for t in trials
        )
    import ray

    slots = min(
        spec.max_concurrent_trials or len(trials),
        int(ray.cluster_resources().get("CPU", 1) // spec.resources.cpu),
    )
    busy = train_s / (wall * slots)
    extra = {"spec": args.spec, "trials": len(trials), "parallel_slots": slots}
    emit("sweep_overhead.wall", wall, "s", **extra)
    emit("sweep_overhead.time_to_first_result", first - start, "s", **extra)
    emit(
        "sweep_overhead.fold_preparation",
        folds["seconds"],
        "s",
        folds=len(folds["trained"]),
        **extra,
    )
    emit(
        "sweep_overhead.classifier_trainings_and_cam_passes",
        len(folds["trained"]),
        "per sweep",
        baseline=masked,
        baseline_is="trials that use a fold's classifier and CAMs",
        **extra,
    )
    emit("sweep_overhead.training_steps", train_s, "s", **extra)
    emit("sweep_overhead.share_outside_training", 1 - busy, "fraction", **extra)
    ray.shutdown()


if __name__ == "__main__":
    main()
