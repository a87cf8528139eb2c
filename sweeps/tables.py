"""The paper-style tables (Markdown, LaTeX, CSV): baseline vs augmented arm per (architecture,
held-out centre), with the paired bootstrap CI of the out-of-distribution Dice difference."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sweeps.results import LeftOut
from sweeps.selection import ORACLE_LABEL, Selection, Setting, held_out_centres, ordered_archs
from sweeps.spec import SweepSpec
from sweeps.stats import N_BOOT, BootstrapCI, align_by_index, paired_bootstrap
from trainables import metric_keys as K
from trainables.run_files import PER_IMAGE_FILE

TABLE_METRICS = ("dice", "recall", "accuracy")
ARCH_LABELS = {"unet": "UNet", "deeplabv3plus": "DeepLabV3+", "sdnet": "SDNet"}
CI_LEVEL = 0.95


def arch_label(arch: str) -> str:
    return ARCH_LABELS.get(arch, arch)


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
    n_boot: int = N_BOOT,
    seed: int = 0,
    spec: SweepSpec | None = None,
) -> list[TableRow]:
    """One row per (architecture, held-out centre): the selected baseline and augmented arms and
    the paired bootstrap CI of their out-of-distribution Dice difference."""
    rows = []
    for arch in ordered_archs(settings, spec):
        for k in held_out_centres(s for s in settings if s.arch == arch):
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


def split_note(spec, frame_level: Sequence[int]) -> str:
    """How the training centres were split, and whether some were split frame by frame."""
    scheme = {"per_centre": "80/10/10 within each training centre", "pooled": "pooled patients of "
              "the training centres, 80 % train, the rest halved"}[spec.data.split]  # fmt: skip
    note = f"Split by patient (data.split {spec.data.split}: {scheme}; seed {spec.data.split_seed})"
    if not frame_level:
        return note + "."
    centres = ", ".join(f"C{c}" for c in frame_level)
    return (
        f"{note}, except {centres}: their patients are unknown and "
        "data.allow_frame_level_split accepted splitting them frame by frame, so validation and "
        "ID scores may be optimistic."
    )


def _notes(
    rows: Sequence[TableRow], selection: Selection, n_boot: int, data_note: str = ""
) -> list[str]:
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
    return notes + ([data_note] if data_note else [])


def render_markdown(
    rows: Sequence[TableRow],
    selection: Selection,
    *,
    title: str,
    archs: Sequence[str],
    n_boot: int,
    left_out: Sequence[LeftOut] = (),
    missing: Sequence[str] = (),
    data_note: str = "",
) -> str:
    tag = f" — {ORACLE_LABEL}" if selection.oracle else ""
    lines = [f"# {title}: baseline vs CAM-guided augmentation{tag}", ""]
    lines += [f"- {n}" for n in _notes(rows, selection, n_boot, data_note)]
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
    data_note: str = "",
) -> str:
    notes = " ".join(_notes(rows, selection, n_boot, data_note))
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
