"""`camsweep export`: best configs, paper-style tables with paired bootstrap CIs, plots, cost and
parameter importance — from a run folder's stored files only.

It works on finished, running and interrupted sweeps alike: only trials that finished their test
evaluation (``results.json`` written) are used; every other trial is listed as left out, with
the reason, and grid points the sweep has not started yet are listed as missing.

The pieces: ``results`` reads the run folder, ``selection`` groups seeds into settings and picks
the best ones, ``tables`` renders the paper-style tables, ``figures`` and ``importance`` the rest;
this module writes them all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from sweeps.cost import compute_cost, format_cost, render_cost_csv
from sweeps.figures import plot_dice_vs_p
from sweeps.importance import param_importance, render_importance_csv
from sweeps.model_export import ARMS, export_models
from sweeps.recipes import recipe_note
from sweeps.results import LeftOut, collect_run
from sweeps.selection import Selection, best_configs, group_settings, ordered_archs, swept_names
from sweeps.spec import FOLDS_FILE
from sweeps.stats import N_BOOT
from sweeps.tables import (
    arch_label,
    render_csv,
    render_latex,
    render_markdown,
    split_note,
    table_rows,
)
from trainables.model_folder import MANIFEST_FILE


@dataclass
class ExportReport:
    out_dir: Path
    files: list[Path]
    selection: Selection
    n_trials: int
    n_used: int
    left_out: list[LeftOut]
    missing: list[str]
    notes: list[str]
    cost_text: str

    def format(self) -> str:
        lines = [
            f"selection: {self.selection.label}",
            f"trials: {self.n_trials} in the run, {self.n_used} used, "
            f"{len(self.left_out)} left out",
        ]
        lines += [f"  left out {t.trial_id} ({t.label}): {t.reason}" for t in self.left_out]
        if self.missing:
            lines.append(f"not started ({len(self.missing)} grid point(s) short of trials):")
            lines += [f"  {m}" for m in self.missing]
        lines += [f"note: {n}" for n in self.notes]
        lines.append(self.cost_text)
        lines.append(f"wrote {len(self.files)} file(s) to {self.out_dir}:")
        lines += [f"  {f.relative_to(self.out_dir)}" for f in self.files]
        return "\n".join(lines)


def export_run(
    run_dir: Path | str,
    *,
    metric: str | None = None,
    oracle: bool = False,
    out: Path | str | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
    model_arm: str = "best",
) -> ExportReport:
    """Writes every export file of a run folder.

    Args:
        run_dir: the sweep's run folder (``<storage>/<name>-<timestamp>``).
        metric: the validation metric that selects settings (default ``val/dice``).
        oracle: select by out-of-distribution test Dice instead (the paper's leaky rule);
            every output is labelled "oracle (test-selected)".
        out: output folder; default ``run_dir/export`` (``run_dir/export-oracle`` with
            ``oracle``, so the leaky tables never replace the validation-selected ones).
        n_boot: bootstrap resamples of each confidence interval.
        seed: seed of the bootstrap.
        model_arm: which arm the exported model folders take per fold: ``best`` (the selected
            setting among all arms), ``baseline`` (p = 0) or ``augmented`` (p > 0).

    Returns:
        What was written and which trials were left out, and why.
    """
    selection = Selection.make(metric, oracle=oracle)
    if model_arm not in ARMS:
        raise ValueError(f"--model-arm {model_arm!r}: valid: {', '.join(ARMS)}")
    run = collect_run(run_dir)
    if not run.trials:
        reasons = "; ".join(f"{t.trial_id}: {t.reason}" for t in run.left_out) or "no trials"
        raise ValueError(f"{run.run_dir}: no finished trial to export yet ({reasons})")
    out_dir = Path(out) if out else run.run_dir / ("export-oracle" if oracle else "export")
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = run.spec
    title = spec.name
    settings = group_settings(run.trials, swept_names(spec))
    archs = ordered_archs(settings, spec)
    rows = table_rows(settings, selection, n_boot=n_boot, seed=seed, spec=spec)
    notes = [
        f"{arch_label(r.arch)} C{r.held_out}: no {arm} arm finished"
        for r in rows
        for arm, s in (("baseline (p = 0)", r.baseline), ("augmented (p > 0)", r.augmented))
        if s is None
    ]
    written: list[Path] = []

    def write(name: str, text: str) -> None:
        (out_dir / name).write_text(text)
        written.append(out_dir / name)

    folds_file = run.run_dir / FOLDS_FILE
    prep = json.loads(folds_file.read_text()) if folds_file.exists() else {}
    data_note = split_note(spec, prep.get("frame_level_split", [])) + " " + recipe_note(spec)
    configs = best_configs(settings, selection, spec)
    write("best_configs.yaml", yaml.safe_dump(configs, sort_keys=False, allow_unicode=True))
    notes += [f"{k}: {v}" for k, v in configs["notes"].items() if v.startswith("not written")]
    md = render_markdown(
        rows,
        selection,
        title=title,
        archs=archs,
        n_boot=n_boot,
        left_out=run.left_out,
        missing=run.missing,
        data_note=data_note,
    )
    write("table.md", md)
    write("table.csv", render_csv(rows, selection))
    tex = render_latex(
        rows, selection, title=title, archs=archs, n_boot=n_boot, data_note=data_note
    )
    write("table.tex", tex)
    plot_dice_vs_p(settings, rows, selection, out_dir / "dice_vs_p.png", title=title, archs=archs)
    written.append(out_dir / "dice_vs_p.png")
    cost = compute_cost(spec, run.records)
    write("cost.csv", render_cost_csv(cost))
    cost_text = format_cost(cost, spec)
    if prep.get("trained"):
        cost_text += (
            f"\n  fold preparation (classifier + CAMs for C{prep['trained']}) took "
            f"{prep.get('seconds', 0):g} s wall-clock, not included above"
        )
    if spec.search.algorithm == "optuna":
        importance_rows, importance_notes = param_importance(spec, run.trials, selection)
        write("importance.csv", render_importance_csv(importance_rows))
        notes += importance_notes
    else:
        notes.append(f"no importance.csv: search.algorithm is {spec.search.algorithm}, not optuna")
    models = export_models(run, settings, selection, out_dir, arm=model_arm)
    written += [folder / MANIFEST_FILE for folder in models.folders]
    notes += models.notes
    return ExportReport(
        out_dir=out_dir,
        files=written,
        selection=selection,
        n_trials=len(run.records),
        n_used=len(run.trials),
        left_out=run.left_out,
        missing=run.missing,
        notes=notes,
        cost_text=cost_text,
    )
