"""Optuna parameter importance of a finished sweep, per grid point."""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Sequence
from typing import Any

from search_spaces.grouping import expand_groups, group_key, group_label
from sweeps.results import TrialData
from sweeps.selection import Selection
from sweeps.spec import SweepSpec


def _distribution(axis):
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if axis.form == "choice":
        return CategoricalDistribution(list(axis.values))
    lo, hi = (float(v) for v in axis.values)
    return FloatDistribution(lo, hi, log=axis.form == "loguniform")


def param_importance(
    spec: SweepSpec, trials: Sequence[TrialData], selection: Selection
) -> tuple[list[dict[str, Any]], list[str]]:
    """Parameter importances per group (grid point) from an in-memory Optuna study rebuilt from
    the stored trials (value = the selection metric); groups with < 2 finished trials are
    skipped with a note. Returns the CSV rows and the notes."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampled = [a for a in spec.axes if a.is_sampled]
    grid = [a.name for a in spec.axes if a.is_grid]
    distributions = {a.name: _distribution(a) for a in sampled}
    evaluator_cls = getattr(optuna.importance, "PedAnovaImportanceEvaluator", None)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for group in expand_groups(spec.axes):
        key = tuple(group.items())
        label = group_label(key)
        members = [t for t in trials if group_key(t.axes, grid) == key]
        values = [(t, selection.score_trial(t)) for t in members]
        values = [(t, v) for t, v in values if math.isfinite(v)]
        base = {"group": label, "n_trials": len(values), "value": selection.label}
        if len(values) < 2:
            note = f"skipped: {len(values)} finished trial(s), importance needs at least 2"
            rows.append({**base, "param": "", "importance": "", "note": note})
            notes.append(f"importance {label}: {note}")
            continue
        study = optuna.create_study(direction="maximize")
        for t, v in values:
            study.add_trial(
                optuna.trial.create_trial(
                    params={n: t.axes[n] for n in distributions},
                    distributions=distributions,
                    value=v,
                )
            )
        evaluator = evaluator_cls() if evaluator_cls else None
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
        except (ValueError, RuntimeError) as exc:
            note = f"skipped: optuna could not evaluate importances ({exc})"
            rows.append({**base, "param": "", "importance": "", "note": note})
            notes.append(f"importance {label}: {note}")
            continue
        name = type(evaluator).__name__ if evaluator else "optuna default"
        # Optuna's own caveats (e.g. too few trials to separate the parameters) travel with
        # the numbers instead of scrolling past on stderr.
        caveats = [str(w.message) for w in caught]
        if len(values) < 10:
            caveats.append("few trials: importances are noisy")
        for param, importance in importances.items():
            tried = {repr(t.axes[param]) for t, _ in values}
            single = [f"{param} took one value only"] if len(tried) == 1 else []
            rows.append(
                {
                    **base,
                    "param": param,
                    "importance": round(float(importance), 6),
                    "note": "; ".join([name, *single, *dict.fromkeys(caveats)]),
                }
            )
    return rows, notes


def render_importance_csv(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    fields = ["group", "param", "importance", "n_trials", "value", "note"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
