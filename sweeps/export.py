"""`camsweep export`: best configs, paper-style tables with paired bootstrap CIs, plots, cost and
parameter importance — from a run folder's stored files only.

It works on finished, running and interrupted sweeps alike: only trials that finished their test
evaluation (``results.json`` written) are used; every other trial is listed as left out, with
the reason, and grid points the sweep has not started yet are listed as missing.

Selection. Trials that differ only in their seed are one *setting*; its scores are seed means.
Per (architecture, held-out centre) the baseline is the best setting with ``p = 0`` and the
augmented arm the best with ``p > 0``, "best" meaning the highest validation metric (default
``val/dice``, measured on the best-validation checkpoint whose test scores are reported). The
paper chose by out-of-distribution test Dice, which leaks the test set into model selection;
``oracle=True`` reproduces that and labels every output "oracle (test-selected)".
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from search_spaces.grouping import expand_groups, group_key, group_label
from sweeps.cost import compute_cost, format_cost, render_cost_csv
from sweeps.spec import FOLDS_FILE, SELECTION_METRICS, SPEC_FILE, SweepSpec, load_spec
from sweeps.stats import BootstrapCI, align_by_index, paired_bootstrap
from sweeps.status import TrialRecord, read_run
from trainables import metric_keys as K
from trainables.trial import CONFIG_FILE, PER_IMAGE_FILE, RESULTS_FILE

ORACLE_METRIC = "test_out/dice"
ORACLE_LABEL = "oracle (test-selected)"
TABLE_METRICS = ("dice", "recall", "accuracy")
ARCH_LABELS = {"unet": "UNet", "deeplabv3plus": "DeepLabV3+", "sdnet": "SDNet"}
CI_LEVEL = 0.95


def arch_label(arch: str) -> str:
    return ARCH_LABELS.get(arch, arch)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# --- selection rule -------------------------------------------------------------------------------


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


# --- reading trials --------------------------------------------------------------------------------


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


def _leave_out_reason(record: TrialRecord) -> str:
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
    if f"{ORACLE_METRIC}" in record.last_result:
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
            left_out.append(LeftOut(record.trial_id, label, _leave_out_reason(record)))
    return RunData(run_dir, spec, records, trials, left_out, _missing(spec, records))


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


def _swept_names(spec: SweepSpec) -> list[str]:
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


def _archs(settings: Iterable[Setting], spec: SweepSpec | None = None) -> list[str]:
    present = {s.arch for s in settings}
    order = []
    if spec is not None:
        axis = next((a for a in spec.axes if a.name == "arch"), None)
        order = [a for a in (axis.values if axis else ()) if a in present]
    return order + sorted(present - set(order))


def _centres(settings: Iterable[Setting]) -> list[int]:
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
    for arch in _archs(settings, spec):
        mine = [s for s in settings if s.arch == arch]
        folds = _centres(mine)
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


# --- the paper-style table --------------------------------------------------------------------------


@dataclass
class TableRow:
    """Baseline vs augmented arm for one (architecture, held-out centre)."""

    arch: str
    held_out: int
    baseline: Setting | None
    augmented: Setting | None
    ci: BootstrapCI | None
    ci_note: str = ""


def _difference_ci(
    augmented: Setting, baseline: Setting, *, n_boot: int, seed: int
) -> tuple[BootstrapCI | None, str]:
    key = K.split_key("test_out", "dice")
    a, b = augmented.scores(key), baseline.scores(key)
    if a is None or b is None:
        return None, f"no CI: {PER_IMAGE_FILE} missing for a trial"
    common, matrix = align_by_index([*a, *b])
    if common.size < 2:
        return None, "no CI: fewer than 2 shared out-of-distribution images"
    note = ""
    sizes = {len(index) for index, _ in [*a, *b]}
    if sizes != {common.size}:
        note = f"aligned on the {common.size} images all trials share"
    ci = paired_bootstrap(
        matrix[: len(a)], matrix[len(a) :], n_boot=n_boot, level=CI_LEVEL, seed=seed
    )
    return ci, note


def table_rows(
    settings: Sequence[Setting],
    selection: Selection,
    *,
    n_boot: int = 10_000,
    seed: int = 0,
    spec: SweepSpec | None = None,
) -> list[TableRow]:
    """One row per (architecture, held-out centre): the selected baseline and augmented arms and
    the paired bootstrap CI of their out-of-distribution Dice difference."""
    rows = []
    for arch in _archs(settings, spec):
        for k in _centres(s for s in settings if s.arch == arch):
            fold = [s for s in settings if s.arch == arch and s.held_out == k]
            baseline = selection.best(s for s in fold if s.p == 0)
            augmented = selection.best(s for s in fold if s.p > 0)
            ci, note = None, ""
            if baseline is not None and augmented is not None:
                ci, note = _difference_ci(augmented, baseline, n_boot=n_boot, seed=seed)
            rows.append(TableRow(arch, k, baseline, augmented, ci, note))
    return rows


@dataclass(frozen=True)
class Cell:
    text: str
    bold: bool = False
    suffix: str = ""  # after the (possibly bold) number, e.g. " (0.6)"
    tex: str | None = None  # LaTeX text when it differs from an escaped ``text``


_TEX_ESCAPES = {c: "\\" + c for c in "&%$#_{}"} | {
    "\\": r"\textbackslash{}",
    "~": r"\textasciitilde{}",
    "^": r"\^{}",
    # pdflatex has no glyphs for these without extra packages
    "Δ": r"$\Delta$",
    "−": "$-$",
    "±": r"$\pm$",
    "×": r"$\times$",
    "≥": r"$\geq$",
    "–": "--",
    "—": "---",
}


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(c, c) for c in text)


def _md(cell: Cell) -> str:
    return (f"**{cell.text}**" if cell.bold else cell.text) + cell.suffix


def _latex(cell: Cell) -> str:
    if cell.tex is not None:
        return cell.tex
    text = tex_escape(cell.text)
    return (rf"\textbf{{{text}}}" if cell.bold else text) + tex_escape(cell.suffix)


def _pair(row: TableRow, key: str) -> tuple[Cell, Cell]:
    """Baseline and augmented cells of one metric; the higher one bold, p after the augmented."""
    base = row.baseline.mean(key) if row.baseline else math.nan
    aug = row.augmented.mean(key) if row.augmented else math.nan
    both = not (math.isnan(base) or math.isnan(aug))
    base_cell = Cell("–" if math.isnan(base) else f"{base:.4f}", both and base >= aug)
    if math.isnan(aug):
        return base_cell, Cell("–")
    return base_cell, Cell(f"{aug:.4f}", both and aug >= base, f" ({row.augmented.p:.3g})")


def _ci_cell(row: TableRow) -> Cell:
    if row.ci is None:
        return Cell("–")
    ci = row.ci
    text = f"{ci.estimate:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}]"
    return Cell(text, tex=f"${ci.estimate:+.4f}$ [${ci.low:+.4f}$, ${ci.high:+.4f}$]")


DETAIL_HEADER = [
    "Held-out",
    "Dice OOD base",
    "Dice OOD aug (p)",
    "Recall OOD base",
    "Recall OOD aug (p)",
    "Acc. OOD base",
    "Acc. OOD aug (p)",
    "ΔDice OOD [95% CI]",
    "Dice ID base",
    "Dice ID aug (p)",
]


def detail_cells(row: TableRow) -> list[Cell]:
    cells = [Cell(f"C{row.held_out}")]
    for metric in TABLE_METRICS:
        cells += _pair(row, K.split_key("test_out", metric))
    cells.append(_ci_cell(row))
    cells += _pair(row, K.split_key("test_in", "dice"))
    return cells


def table1_cells(rows: Sequence[TableRow], archs: Sequence[str]) -> tuple[list[str], list[list]]:
    """The paper's Table 1 layout: one row per held-out centre, baseline/augmented OOD Dice
    columns per architecture."""
    header = ["Held-out"]
    for arch in archs:
        header += [arch_label(arch), f"{arch_label(arch)} + aug"]
    body = []
    for k in sorted({r.held_out for r in rows}):
        cells = [Cell(f"C{k}")]
        for arch in archs:
            row = next((r for r in rows if r.arch == arch and r.held_out == k), None)
            cells += _pair(row, K.split_key("test_out", "dice")) if row else [Cell("–")] * 2
        body.append(cells)
    return header, body


def _md_table(header: Sequence[str], body: Sequence[Sequence[Cell]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md(c) for c in cells) + " |" for cells in body]
    return lines


def _notes(rows: Sequence[TableRow], selection: Selection, n_boot: int) -> list[str]:
    seeds = sorted({s.n_seeds for r in rows for s in (r.baseline, r.augmented) if s})
    two_level = any(r.ci and r.ci.two_level for r in rows)
    notes = [
        selection.caption + ".",
        "OOD: out-of-distribution (the held-out centre); ID: in-distribution test split of the "
        "training centres. base: p = 0; aug: the selected arm with p > 0, its p in parentheses; "
        "the higher of the two in bold.",
        f"Scores are means over {'/'.join(map(str, seeds)) or 'no'} seed(s) per setting.",
        f"ΔDice OOD: augmented − baseline out-of-distribution Dice with a paired bootstrap "
        f"{CI_LEVEL:.0%} CI over images ({n_boot} resamples)"
        + (
            "; where an arm has several seeds the bootstrap resamples seeds too (two-level: "
            "seeds within each arm, images shared by both arms)."
            if two_level
            else "."
        ),
    ]
    notes += [f"{arch_label(r.arch)} C{r.held_out}: {r.ci_note}." for r in rows if r.ci_note]
    return notes


def render_markdown(
    rows: Sequence[TableRow],
    selection: Selection,
    *,
    title: str,
    archs: Sequence[str],
    n_boot: int,
    left_out: Sequence[LeftOut] = (),
    missing: Sequence[str] = (),
) -> str:
    tag = f" — {ORACLE_LABEL}" if selection.oracle else ""
    lines = [f"# {title}: baseline vs CAM-guided augmentation{tag}", ""]
    lines += [f"- {n}" for n in _notes(rows, selection, n_boot)]
    header, body = table1_cells(rows, archs)
    lines += ["", f"## Out-of-distribution Dice (paper Table 1 layout){tag}", ""]
    lines += _md_table(header, body)
    for arch in archs:
        mine = [r for r in rows if r.arch == arch]
        lines += ["", f"## {arch_label(arch)}: OOD and ID scores, paired CI{tag}", ""]
        lines += _md_table(DETAIL_HEADER, [detail_cells(r) for r in mine])
    if left_out or missing:
        lines += ["", "## Not in the tables", ""]
        lines += [f"- {t.trial_id} ({t.label}): {t.reason}" for t in left_out]
        lines += [f"- not started: {m}" for m in missing]
    return "\n".join(lines) + "\n"


def render_latex(
    rows: Sequence[TableRow],
    selection: Selection,
    *,
    title: str,
    archs: Sequence[str],
    n_boot: int,
) -> str:
    notes = " ".join(_notes(rows, selection, n_boot))
    tag = f" ({ORACLE_LABEL})" if selection.oracle else ""
    header, body = table1_cells(rows, archs)
    lines = [
        f"% camsweep export of {title} — selection: {selection.label}",
        r"% needs \usepackage{booktabs}",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{tex_escape(title)}: out-of-distribution Dice, baseline vs augmented"
        rf"{tex_escape(tag)}. {tex_escape(notes)}}}",
        r"\label{tab:camsweep-ood-dice}",
        r"\begin{tabular}{l" + "cc" * len(archs) + "}",
        r"\toprule",
        " & ".join(tex_escape(h) for h in header) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(_latex(c) for c in cells) + r" \\" for cells in body]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    ncol = len(DETAIL_HEADER)
    lines += [
        r"\begin{table}[t]",
        r"\centering",
        r"\resizebox{\textwidth}{!}{%",
        r"\begin{tabular}{l" + "cc" * 3 + "c" + "cc}",
        r"\toprule",
        r" & \multicolumn{2}{c}{Dice (OOD)} & \multicolumn{2}{c}{Recall (OOD)}"
        r" & \multicolumn{2}{c}{Accuracy (OOD)} & $\Delta$Dice (OOD)"
        r" & \multicolumn{2}{c}{Dice (ID)} \\",
        r"Held-out & base & aug ($p$) & base & aug ($p$) & base & aug ($p$)"
        rf" & [{CI_LEVEL:.0%} CI] & base & aug ($p$) \\".replace("%", r"\%"),
    ]
    for arch in archs:
        lines += [r"\midrule", rf"\multicolumn{{{ncol}}}{{l}}{{\textit{{{arch_label(arch)}}}}} \\"]
        lines += [
            " & ".join(_latex(c) for c in detail_cells(r)) + r" \\" for r in rows if r.arch == arch
        ]
    lines += [
        r"\bottomrule",
        r"\end{tabular}}",
        rf"\caption{{{tex_escape(title)}: per-architecture scores{tex_escape(tag)}. "
        rf"{tex_escape(notes)}}}",
        r"\label{tab:camsweep-detail}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def _csv_row(row: TableRow, selection: Selection) -> dict[str, Any]:
    out: dict[str, Any] = {
        "selection": selection.label,
        "arch": row.arch,
        "held_out_centre": row.held_out,
    }
    keys = [K.split_key("test_out", m) for m in TABLE_METRICS] + [
        K.split_key("test_in", "dice"),
        selection.metric,
    ]
    for arm, setting in (("baseline", row.baseline), ("augmented", row.augmented)):
        out[f"{arm}_setting"] = setting.label if setting else ""
        out[f"{arm}_p"] = setting.p if setting else ""
        out[f"{arm}_seeds"] = setting.n_seeds if setting else 0
        out[f"{arm}_trials"] = " ".join(setting.trial_ids) if setting else ""
        for key in dict.fromkeys(keys):
            out[f"{arm}_{key.replace('/', '_')}"] = setting.mean(key) if setting else ""
    ci = row.ci
    out["ood_dice_diff"] = ci.estimate if ci else ""
    out["ood_dice_diff_ci_low"] = ci.low if ci else ""
    out["ood_dice_diff_ci_high"] = ci.high if ci else ""
    out["ci_level"] = ci.level if ci else ""
    out["ci_method"] = (ci.method() if ci else "") + (f"; {row.ci_note}" if row.ci_note else "")
    return out


def render_csv(rows: Sequence[TableRow], selection: Selection) -> str:
    records = [_csv_row(r, selection) for r in rows]
    buffer = io.StringIO()
    fields = list(records[0]) if records else ["selection", "arch", "held_out_centre"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


# --- plot -------------------------------------------------------------------------------------------


def plot_dice_vs_p(
    settings: Sequence[Setting],
    rows: Sequence[TableRow],
    selection: Selection,
    path: Path,
    *,
    title: str,
    archs: Sequence[str],
) -> None:
    """Out-of-distribution Dice (solid) and validation Dice (dashed) against p, one panel per
    held-out centre, one colour per architecture; the selected augmented arm is starred."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    centres = _centres(settings)
    ncols = min(3, len(centres))
    nrows = math.ceil(len(centres) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    colours = {arch: f"C{i}" for i, arch in enumerate(archs)}
    test_key, val_key = K.split_key("test_out", "dice"), K.VAL_DICE
    for ax, k in zip(axes.flat, centres):
        for arch in archs:
            fold = [s for s in settings if s.arch == arch and s.held_out == k]
            per_p = [
                selection.best(s for s in fold if s.p == p) for p in sorted({s.p for s in fold})
            ]
            if not per_p:
                continue
            ps = [s.p for s in per_p]
            ax.errorbar(
                ps,
                [s.mean(test_key) for s in per_p],
                yerr=[s.std(test_key) for s in per_p],
                color=colours[arch],
                marker="o",
                capsize=3,
                label=f"{arch_label(arch)} OOD",
            )
            ax.plot(ps, [s.mean(val_key) for s in per_p], color=colours[arch], ls="--", alpha=0.6)
            row = next((r for r in rows if r.arch == arch and r.held_out == k), None)
            if row is not None and row.augmented is not None:
                ax.plot(
                    [row.augmented.p],
                    [row.augmented.mean(test_key)],
                    marker="*",
                    markersize=14,
                    color=colours[arch],
                    ls="none",
                )
        ax.set_title(f"held-out C{k}")
        ax.set_xlabel("masking probability p")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("Dice")
    for ax in list(axes.flat)[len(centres) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    handles.append(axes.flat[0].plot([], [], color="grey", ls="--")[0])
    labels.append("val Dice (best checkpoint)")
    handles.append(axes.flat[0].plot([], [], color="grey", marker="*", ls="none")[0])
    labels.append("selected augmented arm")
    fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)))
    fig.suptitle(f"{title}: Dice vs p (seed mean ± sd) — selection {selection.label}")
    fig.savefig(path, dpi=120)


# --- Optuna parameter importance -------------------------------------------------------------------


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


# --- the command ------------------------------------------------------------------------------------


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
        lines += [f"  {f.name}" for f in self.files]
        return "\n".join(lines)


def export_run(
    run_dir: Path | str,
    *,
    metric: str | None = None,
    oracle: bool = False,
    out: Path | str | None = None,
    n_boot: int = 10_000,
    seed: int = 0,
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

    Returns:
        What was written and which trials were left out, and why.
    """
    selection = Selection.make(metric, oracle=oracle)
    run = collect_run(run_dir)
    if not run.trials:
        reasons = "; ".join(f"{t.trial_id}: {t.reason}" for t in run.left_out) or "no trials"
        raise ValueError(f"{run.run_dir}: no finished trial to export yet ({reasons})")
    out_dir = Path(out) if out else run.run_dir / ("export-oracle" if oracle else "export")
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = run.spec
    title = spec.name
    settings = group_settings(run.trials, _swept_names(spec))
    archs = _archs(settings, spec)
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
    )
    write("table.md", md)
    write("table.csv", render_csv(rows, selection))
    write("table.tex", render_latex(rows, selection, title=title, archs=archs, n_boot=n_boot))
    plot_dice_vs_p(settings, rows, selection, out_dir / "dice_vs_p.png", title=title, archs=archs)
    written.append(out_dir / "dice_vs_p.png")
    cost = compute_cost(spec, run.records)
    write("cost.csv", render_cost_csv(cost))
    folds_file = run.run_dir / FOLDS_FILE
    cost_text = format_cost(cost, spec)
    if folds_file.exists():
        prep = json.loads(folds_file.read_text())
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


def export_cam_figure(run_dir: Path, out: Path) -> tuple[Path | None, str]:
    """The paper's Figure 1 for the run's first masked fold, from the stored fold artefacts.

    Returns the PNG (None when no fold was prepared, e.g. a baseline-only sweep) and a note.
    """
    from trainables.cam_report import cam_report
    from trainables.classifier import fold_key, load_fold
    from trainables.data.source import prepare_data
    from trainables.data.splits import leave_one_centre_out
    from trainables.engine import Runtime

    spec = load_spec(Path(run_dir) / SPEC_FILE, environment=False)
    folds = json.loads((Path(run_dir) / FOLDS_FILE).read_text())
    centres = sorted(folds.get("trained", []) + folds.get("reused", []))
    if not centres:
        return None, "no CAM figure: no fold needed the centre classifier (baseline-only sweep)"
    cfg = spec.trial_config({"held_out_centre": centres[0]})
    _, data = prepare_data(cfg.data)
    split = leave_one_centre_out(data.centres, data.patients, centres[0], seed=cfg.data.split_seed)
    key = fold_key(data, split, cfg.classifier, cfg.masking.cam_target)
    folder = spec.fold_cache_root() / f"C{centres[0]}-{key}"
    if not (folder / "meta.json").exists():
        return None, f"no CAM figure: fold artefacts {folder} are gone"
    png = Path(out) / "cams.png"
    scores, _ = cam_report(
        data, split, load_fold(folder), Runtime.from_config(cfg.train), png,
        threshold=cfg.masking.threshold,
    )  # fmt: skip
    mean = ""
    if scores:
        seen = [s for s in scores if s.centre != centres[0]]
        mean = (
            f" (CAM vs overlay truth on training centres: precision "
            f"{sum(s.precision for s in seen) / len(seen):.3f}, IoU {sum(s.iou for s in seen) / len(seen):.3f})"
        )
    return png, f"CAM figure for held-out C{centres[0]}{mean}"
