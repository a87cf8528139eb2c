"""Watching a sweep: the one-line progress summary, and W&B — run ids, modes, offline runs kept
with the results, ``wandb sync``, reading offline run files back. (The runs opened on workers —
trials, fold preparations — are in :mod:`trainables.wandb_runs`.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ray import tune

from search_spaces.grouping import group_key, group_label
from sweeps.status import last_line
from trainables.wandb_runs import guarded_run


class SweepSummary(tune.Callback):
    """Prints ``sweep: 3/12 done, 2 running, 0 failed | best val/dice per group`` as trials move.

    Printed when a trial finishes or fails, and at most every ``every_s`` seconds on results.
    """

    def __init__(self, grid_axes: Sequence[str], metric: str, every_s: float = 30.0):
        self.grid_axes = list(grid_axes)
        self.metric = metric
        self.every_s = every_s
        self.best: dict[str, float] = {}
        self._last = 0.0

    def _note(self, trial, result: dict | None) -> None:
        if result and self.metric in result:
            label = group_label(group_key(trial.config, self.grid_axes))
            self.best[label] = max(self.best.get(label, float("-inf")), float(result[self.metric]))

    def line(self, trials) -> str:
        states = [t.status for t in trials]
        done, running = states.count("TERMINATED"), states.count("RUNNING")
        failed = states.count("ERROR")
        best = "; ".join(f"{g} {v:.3f}" for g, v in sorted(self.best.items()))
        return f"sweep: {done}/{len(trials)} done, {running} running, {failed} failed" + (
            f" | best {self.metric}: {best}" if best else ""
        )

    def _print(self, trials, force: bool) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.every_s:
            self._last = now
            print(self.line(trials), flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._note(trial, result)
        self._print(trials, force=False)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._note(trial, trial.last_result)
        self._print(trials, force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        # The console is quiet (Tune's own tables are off unless --verbose): say what failed.
        print(f"trial {trial.trial_id} failed: {last_error_line(trial)}", flush=True)
        self._print(trials, force=True)

    def on_experiment_end(self, trials, **info):
        print(self.line(trials), flush=True)


def last_error_line(trial) -> str:
    """The exception and message that ended a failed trial."""
    try:
        return last_line(Path(trial.error_file).read_text())
    except (OSError, TypeError):
        return "see the trial's error.txt"


# --- W&B ----------------------------------------------------------------------------------------

WANDB_DIR = "wandb"  # under the sweep's run folder: offline runs live with the results


def resolve_mode(mode: str) -> str:
    """``auto`` → online when an API key is configured, offline otherwise."""
    if mode != "auto":
        return mode
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def wandb_settings(spec, run_dir: Path) -> dict[str, Any]:
    """What a trial needs to open its W&B run: plain data, sent to the workers."""
    w = spec.tracking.wandb
    return {
        "mode": resolve_mode(w.mode),
        "project": w.project,
        "entity": w.entity,
        "group": run_dir.name,
        "dir": str(run_dir),
        "init_timeout_s": w.init_timeout_s,
    }


def offline_run_dirs(run_dir: Path) -> list[Path]:
    return sorted((Path(run_dir) / WANDB_DIR).glob("offline-run-*"))


def offline_run_ids(run_dir: Path) -> set[str]:
    """The run ids of the sweep's offline W&B runs. A folder a killed process left before its
    first write holds no run file, and so no run."""
    files = [f for d in offline_run_dirs(run_dir) for f in d.glob("run-*.wandb")]
    return {read_wandb_run(f)["run_id"] for f in files}


def sync_offline_runs(run_dir: Path, *, dry_run: bool = False) -> list[Path]:
    """Uploads the sweep's offline W&B runs with ``wandb sync`` (needs WANDB_API_KEY or login)."""
    dirs = offline_run_dirs(run_dir)
    if dirs and not dry_run:
        wandb_cli = Path(sys.executable).parent / "wandb"
        subprocess.run([str(wandb_cli), "sync", *map(str, dirs)], check=True)
    return dirs


# The offline run file (run-<id>.wandb) is W&B's LevelDB-style log: a 7-byte header
# (":W&B", magic 0xBEE1, version 0), then 32 KiB blocks of chunks, each with a 7-byte header
# (CRC32C, little-endian length, type: 1 full, 2 first, 3 middle, 4 last). Reassembled chunks are
# protobuf `Record`s (wandb.proto.wandb_internal_pb2). wandb ≥ 0.19 ships no Python reader.
_BLOCK, _HEADER = 32768, 7


def _records(path: Path) -> Iterator[bytes]:
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run file")
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _HEADER:  # block trailer padding
            pos += left_in_block
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        if pos + _HEADER + length > len(data):  # the writer was killed mid-record
            return
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            yield pending
            pending = b""


def read_wandb_run(path: Path) -> dict[str, Any]:
    """Run id, group, job type, tags, config and metric history of an offline run file.

    A file cut short (its process was killed) yields what was written before the cut; the run id
    then comes from the file name (``run-<id>.wandb``) if the run record itself was lost.
    """
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2 as pb

    info: dict[str, Any] = {"history": [], "config": {}, "summary": {}}
    info["run_id"] = Path(path).stem.removeprefix("run-")
    for raw in _records(path):
        record = pb.Record()
        try:
            record.ParseFromString(raw)
        except DecodeError:
            break
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            info.update(run_id=run.run_id, group=run.run_group, job_type=run.job_type)
            info["tags"] = list(run.tags)
            for item in run.config.update:
                info["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                info["config"][item.key] = json.loads(item.value_json)
        elif kind == "summary":
            for item in record.summary.update:
                key = item.key or "/".join(item.nested_key)
                info["summary"][key] = json.loads(item.value_json)
        elif kind == "history":
            info["history"].append(
                {
                    i.key or "/".join(i.nested_key): json.loads(i.value_json)
                    for i in record.history.item
                }
            )
    return info


def log_summary_run(settings: dict[str, Any], export_dir: Path, recipe: str = "") -> None:
    """The sweep's summary run: results table, plots, the exported files as an artefact, and
    ``recipe`` (the spec and where it departs from the paper) in its summary."""

    def body(run) -> None:
        if recipe:
            run.summary["recipe"] = recipe
        import csv

        import wandb

        table_csv = Path(export_dir) / "table.csv"
        if table_csv.exists():
            rows = list(csv.reader(table_csv.open()))
            if rows:
                run.log({"results": wandb.Table(columns=rows[0], data=rows[1:])})
        for png in sorted(Path(export_dir).glob("*.png")):
            run.log({png.stem: wandb.Image(str(png))})
        artifact = wandb.Artifact(f"{settings['group']}-export", type="sweep-export")
        for path in sorted(Path(export_dir).iterdir()):
            if path.is_file():
                artifact.add_file(str(path))
        run.log_artifact(artifact)

    guarded_run(settings, f"{settings.get('group', 'camsweep')}-summary", "summary", body)
