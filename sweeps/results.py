"""Reading a run folder for export: every trial Tune knows of, the finished ones with their stored
config, final metrics and per-image scores, and why the others are left out."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from search_spaces.grouping import expand_groups, group_key, group_label
from sweeps.spec import SPEC_FILE, SweepSpec, load_spec
from sweeps.status import TrialRecord, read_run
from trainables import metric_keys as K
from trainables.run_files import CONFIG_FILE, PER_IMAGE_FILE, RESULTS_FILE


@dataclass
class TrialData:
    """One finished trial: its full config, final metrics and per-image scores."""

    record: TrialRecord
    config: dict[str, Any]
    metrics: dict[str, float]
    per_image: dict[str, np.ndarray] | None

    @property
    def trial_id(self) -> str:
        return self.record.trial_id

    @property
    def axes(self) -> dict[str, Any]:
        return self.record.config

    @property
    def arch(self) -> str:
        return self.config["model"]["arch"]

    @property
    def held_out(self) -> int:
        return int(self.config["held_out_centre"])

    @property
    def p(self) -> float:
        return float(self.config["masking"]["p"])

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    def value(self, key: str) -> float:
        """A final metric; validation metrics are those of the best-validation checkpoint."""
        split, _, metric = key.partition("/")
        if split == "val":
            # results.json's val/* are the *last* epoch's; the per-image arrays (and best/val_dice)
            # belong to the best-validation checkpoint, the one whose test scores are reported.
            if self.per_image is not None and key in self.per_image:
                return float(np.mean(self.per_image[key]))
            if key == K.VAL_DICE and K.BEST_VAL_DICE in self.metrics:
                return float(self.metrics[K.BEST_VAL_DICE])
        value = self.metrics.get(key)
        return math.nan if value is None else float(value)

    def scores(self, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(image index, per-image scores)`` of e.g. ``test_out/dice``, if stored."""
        split = key.split("/")[0]
        if self.per_image is None or key not in self.per_image:
            return None
        return self.per_image[f"{split}/index"], self.per_image[key]


@dataclass(frozen=True)
class LeftOut:
    trial_id: str
    label: str
    reason: str


def _read_yaml(path: Path) -> dict[str, Any] | None:
    return yaml.safe_load(path.read_text()) if path.exists() else None


def leave_out_reason(record: TrialRecord) -> str:
    epoch = record.last_result.get(K.EPOCH)
    at = f" (epoch {int(epoch)})" if epoch is not None else ""
    if record.status == "ERROR":
        return f"errored: {record.error or 'no error file'}"
    if record.status == "RUNNING":
        return f"still running{at}"
    if record.status == "PAUSED":
        return f"paused{at}"
    if record.status == "PENDING":
        return "not started yet"
    # Trials report test scores just before writing results.json.
    if K.split_key("test_out", "dice") in record.last_result:
        return f"{RESULTS_FILE} missing although the trial finished (incomplete trial folder)"
    return f"stopped early by the scheduler{at}: no test evaluation"


def load_trial(record: TrialRecord) -> TrialData:
    """Reads a finished trial's files (config.yaml, results.json, per_image.npz)."""
    results = json.loads((record.path / RESULTS_FILE).read_text())
    config = _read_yaml(record.path / CONFIG_FILE) or results["config"]
    per_image = None
    if (record.path / PER_IMAGE_FILE).exists():
        with np.load(record.path / PER_IMAGE_FILE) as arrays:
            per_image = {k: arrays[k] for k in arrays.files}
    return TrialData(record, config, results["metrics"], per_image)


@dataclass
class RunData:
    """What a run folder holds: the spec, every trial Tune knows of, and the usable ones."""

    run_dir: Path
    spec: SweepSpec
    records: list[TrialRecord]
    trials: list[TrialData]
    left_out: list[LeftOut]
    missing: list[str]  # grid points with fewer trials than search.num_samples


def _missing(spec: SweepSpec, records: Sequence[TrialRecord]) -> list[str]:
    grid = [a.name for a in spec.axes if a.is_grid]
    counts: dict[Any, int] = {}
    for r in records:
        key = group_key(r.config, grid)
        counts[key] = counts.get(key, 0) + 1
    missing = []
    for group in expand_groups(spec.axes):
        key = tuple(group.items())
        have = counts.get(key, 0)
        if have < spec.search.num_samples:
            missing.append(
                f"{group_label(key)}: {have} of {spec.search.num_samples} trial(s) started"
            )
    return missing


def collect_run(run_dir: Path | str) -> RunData:
    """Reads a run folder; trials without final results are returned as left out."""
    run_dir = Path(run_dir).expanduser()
    spec = load_spec(run_dir / SPEC_FILE, environment=False)
    records = read_run(run_dir)
    trials, left_out = [], []
    for record in records:
        if record.finished:
            trials.append(load_trial(record))
        else:
            label = group_label(tuple(record.config.items()))
            left_out.append(LeftOut(record.trial_id, label, leave_out_reason(record)))
    return RunData(run_dir, spec, records, trials, left_out, _missing(spec, records))
