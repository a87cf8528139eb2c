"""The benchmarks package: what benchmarks.gpu sizes GPUs for, the results file `emit` writes,
the runner, and the README tables `benchmarks.report` writes from a results file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from benchmarks import BENCHMARKS, Benchmark, common, gpu, method_effect, report, run
from sweeps.stats import BootstrapCI

ROOT = Path(__file__).resolve().parents[1]


def test_the_paper_grid_is_read_from_its_spec():
    sweep = gpu.sweep_of_spec(gpu.PAPER_SPEC)
    # 6 held-out centres × 4 values of p × 300 epochs per architecture.
    assert sweep.trial_epochs == {"unet": 7200, "deeplabv3plus": 7200, "sdnet": 7200}
    assert (sweep.batch, sweep.image_size, sweep.variant, sweep.early_stopping) == (
        4, 256, "paper", False,
    )  # fmt: skip
    assert sweep.net("unet") == gpu.Net("unet", "paper")  # its default encoder


def test_a_sweeps_own_settings_and_drawn_architectures_are_counted(tmp_path):
    spec = {
        "name": "mine",
        "data": {"image_size": 128},
        "model": {"variant": "tiny", "encoder_name": "resnet18"},
        "train": {"epochs": 10, "batch_size": 8},
        "space": {
            "arch": {"choice": ["unet", "sdnet"]},
            "held_out_centre": {"grid": [1, 2]},
            "epochs": {"grid": [10, 20]},
        },
        "search": {"algorithm": "random", "num_samples": 3},
        "scheduler": {"name": "asha"},
    }
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(spec))
    sweep = gpu.sweep_of_spec(str(path))
    # 2 centres × (10 + 20) epochs × 3 samples, shared by the two drawn architectures.
    assert sweep.trial_epochs == {"unet": 90, "sdnet": 90}
    assert (sweep.batch, sweep.image_size, sweep.early_stopping) == (8, 128, True)
    assert sweep.net("unet").encoder == "resnet18" and sweep.net("sdnet").encoder is None
    assert sweep.net("unet", reduced=True) == gpu.Net("unet", "tiny")


def test_every_benchmark_module_is_registered_and_nothing_else():
    tools = {"__init__", "common", "run", "report"}
    modules = {p.stem for p in (ROOT / "benchmarks").glob("*.py")} - tools
    assert [b.name for b in BENCHMARKS] and {b.name for b in BENCHMARKS} == modules
    assert all(b.compares for b in BENCHMARKS)


def test_emit_prints_the_figure_and_appends_it_with_its_provenance(tmp_path, monkeypatch, capsys):
    results = tmp_path / "out" / "results.jsonl"
    monkeypatch.setenv(common.RESULTS_ENV, str(results))
    monkeypatch.setenv(common.RUN_ID_ENV, "run-7")
    common.run_id.cache_clear()
    try:
        common.emit("x.speed", 12.0, "images/s", baseline=4.0, device="cpu")
        common.emit("x.size", 3.0, "GiB")
    finally:
        common.run_id.cache_clear()
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    written = [json.loads(line) for line in results.read_text().splitlines()]
    assert printed[0]["ratio"] == 3.0 and "run_id" not in printed[0]  # stdout as before
    assert [r["name"] for r in written] == ["x.speed", "x.size"]
    for p, w in zip(printed, written):
        assert {k: w[k] for k in p} == p
        assert w["run_id"] == "run-7" and w["time"].endswith("+00:00") and w["benchmark"]
    assert report.load_rows(results) == written


def test_the_runner_shares_one_run_id_and_stops_at_the_first_failure(monkeypatch):
    calls = []
    statuses = iter([0, 3, 0])

    def fake(bench: Benchmark, run_id: str) -> int:
        calls.append((bench.name, run_id))
        return next(statuses)

    monkeypatch.setattr(run, "run_one", fake)
    monkeypatch.delenv(common.RUN_ID_ENV, raising=False)
    assert run.main(["data_path", "cam_quality", "gpu"]) == 3
    assert [name for name, _ in calls] == ["data_path", "cam_quality"]
    assert len({run_id for _, run_id in calls}) == 1
    with pytest.raises(SystemExit):
        run.main(["common"])  # not a benchmark


def test_the_method_effect_table_has_a_row_per_fold_and_the_mean_over_folds():
    def fold(centre, p0, masked, low, high):
        ci = BootstrapCI(masked - p0, low, high, 0.95, 30, (3, 3), 1000, paired=True)
        accuracy = {"train_accuracy": 1.0, "val_accuracy": 0.95}
        return method_effect.FoldEffect(centre, p0, masked, ci, accuracy)

    lines = method_effect.markdown_table(
        [fold(1, 0.5, 0.6, 0.02, 0.18), fold(2, 0.7, 0.65, -0.2, 0.01)]
    )
    assert lines[2] == "| C1 | 30 | 0.5000 | 0.6000 | +0.1000 | [+0.0200, +0.1800] | 1.00 / 0.95 |"
    assert lines[3] == "| C2 | 30 | 0.7000 | 0.6500 | -0.0500 | [-0.2000, +0.0100] | 1.00 / 0.95 |"
    # The mean of the folds' differences; only C1's CI excludes 0.
    assert lines[4] == "| mean over folds | | 0.6000 | 0.6250 | +0.0250 | 1 CI above 0, 0 below | |"


def test_a_benchmark_that_fails_gives_a_non_zero_status():
    assert run.run_one(Benchmark("no_such_benchmark", ""), "run-1") != 0


def _row(name, value, unit, run_id, *, machine="m1", baseline=None, **extra):
    benchmark = "benchmarks." + name.split(".")[0]
    row = {"name": name, "value": value, "unit": unit}
    if baseline is not None:
        row |= {"baseline": baseline, "ratio": round(value / baseline, 4)}
    return {**row, **extra, "machine": machine, "benchmark": benchmark, "run_id": run_id,
            "time": f"2025-06-0{run_id[-1]}T10:00:00+00:00"}  # fmt: skip


FIXTURE = [
    _row("data_path.reference_decode_augment", 50.0, "images/s", "r1"),
    _row("data_path.cached_augment", 600.0, "images/s", "r1", baseline=50.0),
    _row("data_path.batched_augment", 700.0, "images/s", "r1", baseline=50.0, device="cpu"),
    _row("data_path.reference_decode_augment", 100.0, "images/s", "r2"),
    _row("data_path.cached_augment", 1371.2, "images/s", "r2", baseline=100.0),
    _row("data_path.batched_augment", 900.0, "images/s", "r2", baseline=100.0, device="cpu"),
    _row("data_path.batched_augment", 5000.0, "images/s", "r2", baseline=100.0, device="cuda"),
    _row("cam_quality.iou_training_centres", 0.2134, "fraction", "r3", machine="m2"),
    _row("cam_quality.energy_over_chance", 2.13, "x", "r3", machine="m2"),
    _row("cam_quality.energy_over_chance", 1.49, "x", "r5", machine="m2", overrides="lr=1"),
    _row("data_path.cached_augment", 1000.0, "images/s", "r4", baseline=20.0),
]


def _table(section: str, machine: str) -> list[str]:
    """The rows of ``machine``'s figures table in a generated section."""
    lines = section.splitlines()
    start = lines.index(next(line for line in lines if line.startswith(f"On `{machine}`")))
    table = []
    for line in lines[start + 4 :]:  # past the heading, a blank line and the table's header
        if not line.startswith("|"):
            return table
        table.append(line)
    return table


def test_the_figures_table_gives_ranges_runs_and_median_ratios_per_machine():
    section = report.generate(FIXTURE)
    assert section.startswith(report.BEGIN) and section.endswith(report.END)
    assert "On `m1`: 3 runs, 2025-06-01 – 2025-06-04." in section
    assert _table(section, "m1") == [
        "| `data_path.reference_decode_augment` | 50–100 | images/s | 2 |  |",
        # ratios 12, 13.712 and 50: their median, to 3 significant digits
        "| `data_path.cached_augment` | 600–1370 | images/s | 3 | 13.7× |",
        # one name, two devices: two figures, not one range
        "| `data_path.batched_augment (device=cpu)` | 700–900 | images/s | 2 | 11.5× |",
        "| `data_path.batched_augment (device=cuda)` | 5000 | images/s | 1 | 50× |",
        "| `benchmarks.step_overhead` | not run in the results file |  |  |  |",
        "| `benchmarks.cam_quality` | not run on this machine in the results file |  |  |  |",
        "| `benchmarks.sweep_overhead` | not run in the results file |  |  |  |",
        "| `benchmarks.gpu` | not run in the results file |  |  |  |",
        "| `benchmarks.predict_throughput` | not run in the results file |  |  |  |",
        "| `benchmarks.method_effect` | not run in the results file |  |  |  |",
    ]
    m2 = _table(section, "m2")
    assert "| `cam_quality.iou_training_centres` | 0.213 | fraction | 1 |  |" in m2
    # A run with `--set` overrides is another figure; the spec's own shows no `overrides=`.
    assert "| `cam_quality.energy_over_chance` | 2.13 | x | 1 |  |" in m2
    assert "| `cam_quality.energy_over_chance (overrides=lr=1)` | 1.49 | x | 1 |  |" in m2
    for bench in BENCHMARKS:  # the registry's table
        assert f"| `{bench.module}` | {bench.compares} |" in section


@pytest.mark.parametrize(
    ("value", "text"),
    [(1371.2, "1370"), (0.04567, "0.0457"), (2.0, "2"), (0.99996, "1"), (12.856, "12.9"),
     (0.0, "0"), (123456.0, "123000"), (-5.234, "-5.23"), (0.47, "0.47")],
)  # fmt: skip
def test_numbers_have_three_significant_digits(value, text):
    assert report.number(value) == text


def test_report_rewrites_only_between_the_markers_and_check_detects_stale_tables(tmp_path):
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in FIXTURE))
    readme = tmp_path / "README.md"
    before, after = "# Title\n\n## Benchmarks\n\nprose\n\n", "\n\ntargets prose\n\n## Next\n"
    readme.write_text(f"{before}{report.BEGIN}\nold figures\n{report.END}{after}")
    args = ["--results", str(results), "--readme", str(readme)]
    assert report.main([*args, "--check"]) == 1
    assert report.main(args) == 0
    text = readme.read_text()
    assert text == before + report.generate(FIXTURE) + after
    assert report.main([*args, "--check"]) == 0
    # A new run changes the figures: the README's tables are stale again.
    with results.open("a") as f:
        f.write(json.dumps(_row("data_path.cached_augment", 2000.0, "images/s", "r5")) + "\n")
    assert report.main([*args, "--check"]) == 1
    readme.write_text("no markers\n")
    assert report.main(args) == 2
