"""Sweep axes: which trial-config key each axis sets, and the forms an axis can take.

In a sweep YAML, ``space`` maps axis names (the registry below) to one of:

- a constant: ``threshold: 0.5``
- ``{grid: [...]}`` — every value is run; grid axes define the *groups* (see grouping.py)
- ``{choice: [...]}`` — sampled from the list
- ``{uniform: [lo, hi]}`` / ``{loguniform: [lo, hi]}`` — sampled from the interval
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Axis name → dotted key of the trial config (trainables.config.TrialConfig).
AXES: dict[str, str] = {
    "arch": "model.arch",
    "held_out_centre": "held_out_centre",
    "p": "masking.p",
    "threshold": "masking.threshold",
    "mask_mode": "masking.mode",
    "cam_mode": "masking.cam_mode",
    "lr": "train.lr",
    "weight_decay": "train.weight_decay",
    "batch_size": "train.batch_size",
    "epochs": "train.epochs",
    "encoder_name": "model.encoder_name",
    "seed": "seed",
}
AXIS_FORMS = ("grid", "choice", "uniform", "loguniform")


@dataclass(frozen=True)
class Axis:
    """One axis of the search space."""

    name: str
    form: str  # "constant" or one of AXIS_FORMS
    values: tuple[Any, ...]  # constant: (v,); grid/choice: the values; (log)uniform: (lo, hi)

    @property
    def key(self) -> str:
        return AXES[self.name]

    @property
    def is_grid(self) -> bool:
        return self.form == "grid"

    @property
    def is_sampled(self) -> bool:
        return self.form in ("choice", "uniform", "loguniform")


def parse_axis(name: str, raw: Any) -> tuple[Axis | None, list[str]]:
    """Parses one ``space`` entry; returns the axis or the problems (naming ``space.<name>``)."""
    where = f"space.{name}"
    if name not in AXES:
        return None, [f"{where}: unknown axis; valid axes: {', '.join(AXES)}"]
    if not isinstance(raw, dict):
        if isinstance(raw, list):
            return None, [f"{where}: a list needs a form, e.g. {{grid: {raw}}}"]
        return Axis(name, "constant", (raw,)), []
    if len(raw) != 1 or next(iter(raw)) not in AXIS_FORMS:
        return None, [f"{where}: expected one of {', '.join(AXIS_FORMS)} (got keys {list(raw)})"]
    form, values = next(iter(raw.items()))
    if not isinstance(values, list) or not values:
        return None, [f"{where}.{form}: must be a non-empty list (got {values!r})"]
    if form in ("uniform", "loguniform"):
        if len(values) != 2 or not all(isinstance(v, int | float) for v in values):
            return None, [f"{where}.{form}: expected [low, high] numbers (got {values!r})"]
        lo, hi = values
        if not lo < hi:
            return None, [f"{where}.{form}: low {lo} must be below high {hi}"]
        if form == "loguniform" and lo <= 0:
            return None, [f"{where}.loguniform: bounds must be positive (got {lo})"]
    elif len(set(map(repr, values))) != len(values):
        return None, [f"{where}.{form}: duplicate values in {values!r}"]
    return Axis(name, form, tuple(values)), []
