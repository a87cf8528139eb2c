"""Which trials count, and which setting is best.

Trials that differ only in their seed are one *setting*; its scores are seed means. Per
(architecture, held-out centre) the baseline is the best setting with ``p = 0`` and the augmented
arm the best with ``p > 0``, "best" meaning the highest validation metric (default ``val/dice``,
measured on the best-validation checkpoint whose test scores are reported). The paper chose by
out-of-distribution test Dice, which leaks the test set into model selection; the oracle rule
reproduces that and labels every output "oracle (test-selected)".
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sweeps.results import TrialData
from sweeps.spec import SELECTION_METRICS, SweepSpec
from trainables import metric_keys as K

ORACLE_METRIC = "test_out/dice"
ORACLE_LABEL = "oracle (test-selected)"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Selection:
    """How the best setting is chosen: a validation metric, or the leaky oracle rule."""

    metric: str
    oracle: bool = False

    @classmethod
    def make(cls, metric: str | None = None, *, oracle: bool = False) -> Selection:
        """Validates the choice; ``metric`` defaults to ``val/dice``."""
        if oracle:
            if metric not in (None, ORACLE_METRIC):
                raise ValueError(
                    f"--oracle selects by {ORACLE_METRIC}; it cannot be combined with "
                    f"--metric {metric}"
                )
            return cls(ORACLE_METRIC, oracle=True)
        metric = metric or K.VAL_DICE
        if metric not in SELECTION_METRICS:
            raise ValueError(
                f"selection metric {metric!r}: valid: {', '.join(SELECTION_METRICS)} "
                "(or --oracle for test_out/dice)"
            )
        return cls(metric)

    @property
    def label(self) -> str:
        """Short name of the rule, for headings and file fields."""
        return f"{ORACLE_LABEL}: {self.metric}" if self.oracle else f"validation: {self.metric}"

    @property
    def caption(self) -> str:
        """One sentence for captions."""
        if self.oracle:
            return (
                f"Selection: {ORACLE_LABEL} — the setting with the best mean {self.metric} "
                "over seeds, i.e. chosen on the out-of-distribution test set as in the paper; "
                "this leaks the test set into model selection and can overstate the gain"
            )
        return (
            f"Selection: the setting with the best mean validation {self.metric.split('/')[1]} "
            f"({self.metric}, best-validation checkpoint) over seeds"
        )

    def score(self, setting: Setting) -> float:
        value = setting.mean(self.metric)
        return -math.inf if math.isnan(value) else value

    def score_trial(self, trial: TrialData) -> float:
        value = trial.value(self.metric)
        return -math.inf if math.isnan(value) else value

    def best(self, settings: Iterable[Setting]) -> Setting | None:
        """The highest-scoring setting; ties go to the smaller p, then the label, so the choice
        does not depend on the order trials were read in."""
        candidates = list(settings)
        if not candidates:
            return None
        return min(candidates, key=lambda s: (-self.score(s), s.p, s.label))


# --- settings (trials that differ only in their seed) ---------------------------------------------


@dataclass
class Setting:
    """One point of the swept axes in one fold, aggregated over its seeds."""

    arch: str
    held_out: int
    p: float
    label: str  # the swept axes other than arch, held-out centre and seed, e.g. "p=0.5"
    trials: list[TrialData] = field(default_factory=list)

    @property
    def n_seeds(self) -> int:
        return len(self.trials)

    @property
    def trial_ids(self) -> list[str]:
        return [t.trial_id for t in self.trials]

    def values(self, key: str) -> np.ndarray:
        return np.array([t.value(key) for t in self.trials])

    def mean(self, key: str) -> float:
        values = self.values(key)
        return math.nan if np.all(np.isnan(values)) else float(np.nanmean(values))

    def std(self, key: str) -> float:
        values = self.values(key)
        return float(np.nanstd(values)) if len(values) > 1 else 0.0

    def representative(self) -> TrialData:
        """The trial whose config stands for the setting (lowest seed, then trial id)."""
        return min(self.trials, key=lambda t: (t.seed, t.trial_id))

    def scores(self, key: str) -> list[tuple[np.ndarray, np.ndarray]] | None:
        pairs = [t.scores(key) for t in self.trials]
        return None if any(p is None for p in pairs) else pairs


def swept_names(spec: SweepSpec) -> list[str]:
    skip = {"arch", "held_out_centre", "seed"}
    return [a.name for a in spec.axes if a.form != "constant" and a.name not in skip]


def _without(config: dict[str, Any], *keys: str) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in keys}, sort_keys=True)


def group_settings(trials: Iterable[TrialData], swept: Sequence[str] = ("p",)) -> list[Setting]:
    """Groups trials that differ only in ``seed`` into settings, per (arch, held-out centre)."""
    settings: dict[tuple[str, int, str], Setting] = {}
    for t in trials:
        key = (t.arch, t.held_out, _without(t.config, "seed"))
        if key not in settings:
            parts = [f"{n}={_fmt(t.axes[n])}" for n in swept if n in t.axes]
            label = ", ".join(parts) or f"p={_fmt(t.p)}"
            settings[key] = Setting(t.arch, t.held_out, t.p, label)
        settings[key].trials.append(t)
    return sorted(settings.values(), key=lambda s: (s.arch, s.held_out, s.p, s.label))


def ordered_archs(settings: Iterable[Setting], spec: SweepSpec | None = None) -> list[str]:
    present = {s.arch for s in settings}
    order = []
    if spec is not None:
        axis = next((a for a in spec.axes if a.name == "arch"), None)
        order = [a for a in (axis.values if axis else ()) if a in present]
    return order + sorted(present - set(order))


def held_out_centres(settings: Iterable[Setting]) -> list[int]:
    return sorted({s.held_out for s in settings})


# --- best configs -----------------------------------------------------------------------------------


def best_configs(
    settings: Sequence[Setting], selection: Selection, spec: SweepSpec | None = None
) -> dict[str, Any]:
    """``best_configs.yaml`` content: the best full trial config per (arch, held-out centre) among
    all arms, and per architecture over folds.

    The per-architecture entry is the setting with the best mean score across folds among the
    settings run on *every* fold (comparing means over different fold sets would favour settings
    that happen to miss a hard fold); its ``held_out_centre`` is the first fold.
    """
    configs: dict[str, Any] = {}
    scores: dict[str, Any] = {}
    notes: dict[str, str] = {}
    for arch in ordered_archs(settings, spec):
        mine = [s for s in settings if s.arch == arch]
        folds = held_out_centres(mine)
        for k in folds:
            best = selection.best(s for s in mine if s.held_out == k)
            entry = f"{arch}/C{k}"
            configs[entry] = copy.deepcopy(best.representative().config)
            scores[entry] = {
                "setting": best.label,
                selection.metric: round(best.mean(selection.metric), 6),
                "seeds": best.n_seeds,
                "trials": best.trial_ids,
            }
        by_setting: dict[str, dict[int, Setting]] = {}
        for s in mine:
            key = _without(s.representative().config, "seed", "held_out_centre")
            by_setting.setdefault(key, {})[s.held_out] = s
        complete = [per_fold for per_fold in by_setting.values() if len(per_fold) == len(folds)]
        entry = f"{arch}/all-folds"
        fold_names = ", ".join(f"C{k}" for k in folds)
        if not complete:
            notes[entry] = (
                f"not written: no setting of the swept axes finished on every fold ({fold_names}) "
                "— sampled axes differ between folds, or some trials are missing; use the "
                "per-fold entries"
            )
            continue
        best_mean, best_folds = max(
            (
                (float(np.mean([selection.score(s) for s in per_fold.values()])), per_fold)
                for per_fold in complete
            ),
            key=lambda item: (item[0], -min(s.p for s in item[1].values())),
        )
        first = best_folds[folds[0]]
        configs[entry] = copy.deepcopy(first.representative().config)
        scores[entry] = {
            "setting": first.label,
            f"mean {selection.metric} over folds": round(best_mean, 6),
            "per fold": {f"C{k}": round(best_folds[k].mean(selection.metric), 6) for k in folds},
        }
        notes[entry] = (
            f"the setting ({first.label}) with the best mean {selection.metric} over folds "
            f"{fold_names}; held_out_centre is the first fold, C{folds[0]} — set it to the "
            "centre you want to hold out"
        )
    return {"selection": selection.label, "notes": notes, "scores": scores, "configs": configs}
