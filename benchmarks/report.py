"""Writes the README's benchmark tables from the results file: what each registered benchmark
compares, and per machine each figure's range over the runs that measured it. Only the text
between the markers ``<!-- bench:begin -->`` and ``<!-- bench:end -->`` is replaced.

    python -m benchmarks.report [--results FILE] [--readme README.md] [--check]

``--check`` writes nothing and exits 1 when the README's tables are not what would be written.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import BENCHMARKS, Benchmark
from benchmarks.common import REPO, results_path

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
NOT_RUN = "not run in the results file"
NOT_RUN_HERE = "not run on this machine in the results file"
REQUIRED = ("name", "value", "unit", "machine", "benchmark", "run_id", "time")


@dataclass(frozen=True)
class Figure:
    """One figure of one machine, summarised over the runs in the results file."""

    label: str
    unit: str
    low: float
    high: float
    runs: int
    ratio: float | None  # median of the rows' ratio to their baseline; None: no baseline


def load_rows(path: Path) -> list[dict]:
    """The rows of a results file (JSON lines written by ``benchmarks.common.emit``)."""
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: not JSON ({exc})") from None
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise ValueError(f"{path}:{lineno}: no {', '.join(missing)} (not a results-file row)")
        rows.append(row)
    return rows


def short_name(module: str) -> str:
    """``benchmarks.data_path`` → ``data_path``: the registry's name of a row's benchmark."""
    return module.removeprefix("benchmarks.")


def _frozen(value) -> str:
    """A hashable, comparable form of a row field (lists and dicts included)."""
    return json.dumps(value, sort_keys=True)


def _shown(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def group_figures(rows: Sequence[dict], keys: Sequence[str]) -> dict[str, list[dict]]:
    """Rows by figure, in order of first appearance: by name, and within a name by those of
    ``keys`` whose values differ among its rows (shown in the label, e.g. ``(device=cuda)``)."""
    by_name: dict[str, list[dict]] = {}
    for row in rows:
        by_name.setdefault(row["name"], []).append(row)
    groups: dict[str, list[dict]] = {}
    for name, named in by_name.items():
        varying = [k for k in keys if len({_frozen(r.get(k)) for r in named}) > 1]
        for row in named:
            # A field a row lacks is its benchmark's default (e.g. no `overrides`): not shown.
            shown = [k for k in varying if row.get(k) is not None]
            qualifiers = ", ".join(f"{k}={_shown(row[k])}" for k in shown)
            label = f"{name} ({qualifiers})" if qualifiers else name
            groups.setdefault(label, []).append(row)
    return groups


def summarise(label: str, rows: Sequence[dict]) -> Figure:
    """A figure's range, run count and median ratio over ``rows`` (all of that figure)."""
    values = [float(r["value"]) for r in rows]
    ratios = [float(r["ratio"]) for r in rows if r.get("ratio") is not None]
    return Figure(
        label=label,
        unit=rows[0]["unit"],
        low=min(values),
        high=max(values),
        runs=len({r["run_id"] for r in rows}),
        ratio=statistics.median(ratios) if ratios else None,
    )


def number(x: float) -> str:
    """``x`` to 3 significant digits, without exponent or trailing zeros: 1371.2 → 1370,
    0.04567 → 0.0457, 2.0 → 2."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    magnitude = math.floor(math.log10(abs(x)))
    rounded = round(x, 2 - magnitude)
    if abs(rounded) >= 10 ** (magnitude + 1):  # 0.9996 rounds up to 1.00: one digit fewer
        magnitude += 1
    text = f"{rounded:.{max(2 - magnitude, 0)}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def value_range(low: float, high: float) -> str:
    """``low–high`` to 3 significant digits; one number when both read the same."""
    a, b = number(low), number(high)
    if a == b:
        return a
    return f"{a} to {b}" if low < 0 else f"{a}–{b}"  # an en dash after a minus sign misreads


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _row(*cells: str) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def compares_table(benches: Iterable[Benchmark] = BENCHMARKS) -> list[str]:
    """The "what it compares" table of the registry."""
    lines = ["| benchmark | what it compares |", "|---|---|"]
    return lines + [_row(f"`{b.module}`", b.compares) for b in benches]


def figure_rows(bench: Benchmark, rows: Sequence[dict], ran: set[str]) -> list[str]:
    """Table rows of one benchmark's figures in ``rows`` (one machine's); without any, a row
    saying it was not run (``ran``: the benchmarks with rows anywhere in the results file)."""
    mine = [r for r in rows if short_name(r["benchmark"]) == bench.name]
    if not mine:
        return [
            _row(f"`{bench.module}`", NOT_RUN_HERE if bench.name in ran else NOT_RUN, "", "", "")
        ]
    lines = []
    for label, group in group_figures(mine, bench.figure_keys).items():
        f = summarise(label, group)
        ratio = f"{number(f.ratio)}×" if f.ratio is not None else ""
        lines.append(_row(f"`{f.label}`", value_range(f.low, f.high), f.unit, str(f.runs), ratio))
    return lines


def figures_table(rows: Sequence[dict], benches: Sequence[Benchmark], ran: set[str]) -> list[str]:
    """One machine's figures table, benchmark by benchmark in registry order."""
    header = [
        "| figure | range | unit | runs | median ratio to baseline |",
        "|---|---|---|---|---|",
    ]
    return header + [line for bench in benches for line in figure_rows(bench, rows, ran)]


def machine_heading(machine: str, rows: Sequence[dict]) -> str:
    """A machine's line above its table: how many runs, over which (UTC) dates."""
    runs = len({r["run_id"] for r in rows})
    dates = sorted(r["time"][:10] for r in rows)
    span = dates[0] if dates[0] == dates[-1] else f"{dates[0]} – {dates[-1]}"
    return f"On `{machine}`: {runs} run{'s' if runs != 1 else ''}, {span}."


def _benchmarks_of(rows: Sequence[dict]) -> list[Benchmark]:
    """The registry, then any benchmark the rows name that it lacks (kept, not dropped)."""
    known = {b.name for b in BENCHMARKS}
    extra = dict.fromkeys(
        short_name(r["benchmark"]) for r in rows if short_name(r["benchmark"]) not in known
    )
    return [*BENCHMARKS, *(Benchmark(name, "") for name in extra)]


def generate(rows: Sequence[dict]) -> str:
    """The README's benchmark section between (and including) the markers."""
    benches = _benchmarks_of(rows)
    ran = {short_name(r["benchmark"]) for r in rows}
    lines = [
        BEGIN,
        "<!-- Written by `python -m benchmarks.report` from the results file: change the",
        "registry (benchmarks/__init__.py) or rerun benchmarks, not this text. -->",
        "",
        *compares_table(),
        "",
        "Figures of the results file: each figure's range (min–max) over the runs that measured",
        "it, and the median of its ratio to the baseline measured in the same run.",
        "",
    ]
    machines = list(dict.fromkeys(r["machine"] for r in rows))
    if not machines:
        lines += [*figures_table([], benches, ran), ""]
    for machine in machines:
        mine = [r for r in rows if r["machine"] == machine]
        lines += [machine_heading(machine, mine), "", *figures_table(mine, benches, ran), ""]
    return "\n".join([*lines, END])


def replace_section(text: str, section: str) -> str:
    """``text`` with what lies between its markers (markers included) replaced by ``section``."""
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError(f"needs exactly one {BEGIN} and one {END}")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    if end < start:
        raise ValueError(f"{END} comes before {BEGIN}")
    return text[:start] + section + text[end:]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: rewrites (or with --check, checks) the README's benchmark tables."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="results file (default: $CAMSWEEP_BENCH_RESULTS or benchmarks/results.jsonl)",
    )
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if the tables differ")
    args = parser.parse_args(argv)
    results = args.results or results_path()
    if not results.is_file():
        print(
            f"benchmarks.report: no results file {results}: run `python -m benchmarks.run`",
            file=sys.stderr,
        )
        return 2
    try:
        old = args.readme.read_text(encoding="utf-8")
        new = replace_section(old, generate(load_rows(results)))
    except (OSError, ValueError) as exc:
        print(f"benchmarks.report: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if new == old:
            return 0
        diff = difflib.unified_diff(
            old.splitlines(), new.splitlines(), str(args.readme), "generated", lineterm=""
        )
        print("\n".join(diff), file=sys.stderr)
        print(
            f"{args.readme}: benchmark tables are not those of {results}; run "
            "`python -m benchmarks.report`",
            file=sys.stderr,
        )
        return 1
    if new != old:
        args.readme.write_text(new, encoding="utf-8")
    print(f"{args.readme}: benchmark tables {'written' if new != old else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
