"""`camsweep export`: selection rules, best configs, tables with paired CIs, cost, importance —
on hand-built trials, plus one end-to-end run on a tiny real sweep."""

from __future__ import annotations

import csv
import io
import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from sweeps.cost import _last_json_line, compute_cost
from sweeps.importance import param_importance
from sweeps.results import TrialData, leave_out_reason
from sweeps.selection import ORACLE_LABEL, Selection, best_configs, group_settings
from sweeps.spec import SweepSpec
from sweeps.stats import paired_bootstrap
from sweeps.status import TrialRecord
from sweeps.tables import render_csv, render_latex, render_markdown, table_rows
from trainables.config import TrialConfig

N_IMAGES = 30
# Per-image difficulty shared by every arm: what makes the per-image scores paired.
DIFFICULTY = np.random.default_rng(0).uniform(-0.2, 0.2, N_IMAGES)


def make_trial(
    tid: str,
    *,
    arch: str = "unet",
    centre: int = 2,
    p: float = 0.0,
    seed: int = 0,
    val: float = 0.5,
    test: float = 0.5,
    last_val: float | None = None,
    threshold: float = 0.5,
    shuffle: int | None = None,
) -> TrialData:
    """A finished trial whose best-checkpoint validation Dice is ``val`` and whose
    out-of-distribution Dice is ``test`` (per-image arrays have exactly those means)."""
    cfg = TrialConfig.model_validate(
        {
            "held_out_centre": centre,
            "seed": seed,
            "model": {"arch": arch, "variant": "tiny"},
            "masking": {"p": p, "threshold": threshold},
        }
    ).to_dict()
    axes = {"arch": arch, "held_out_centre": centre, "p": p, "seed": seed, "threshold": threshold}
    index = np.arange(100, 100 + N_IMAGES)
    noise = np.random.default_rng(zlib.crc32(tid.encode())).normal(0, 0.02, N_IMAGES)
    test_dice = test + (DIFFICULTY - DIFFICULTY.mean()) + (noise - noise.mean())
    if shuffle is not None:
        order = np.random.default_rng(shuffle).permutation(N_IMAGES)
        index, test_dice = index[order], test_dice[order]
    per_image = {
        "val/index": np.arange(10),
        "val/dice": np.full(10, val),
        "test_out/index": index,
        "test_out/dice": test_dice,
    }
    metrics = {
        "val/dice": val if last_val is None else last_val,  # results.json: the last epoch's
        "best/val_dice": val,
        "test_out/dice": float(test_dice.mean()),
        "test_out/recall": test + 0.1,
        "test_out/accuracy": 0.9,
        "test_in/dice": test + 0.2,
    }
    record = TrialRecord(tid, "TERMINATED", axes, Path("/nonexistent") / tid, final=metrics)
    return TrialData(record, cfg, metrics, per_image)


def rows_for(trials, selection, **kw):
    settings = group_settings(trials)
    return settings, table_rows(settings, selection, n_boot=500, **kw)


# --- selection --------------------------------------------------------------------------------------


def test_validation_selection_ignores_a_better_test_score_and_oracle_takes_it():
    trials = [
        make_trial("base", p=0.0, val=0.50, test=0.50),
        make_trial("val-best", p=0.4, val=0.70, test=0.52),
        make_trial("test-best", p=0.6, val=0.60, test=0.65),
    ]
    _, rows = rows_for(trials, Selection.make())
    assert rows[0].augmented.trial_ids == ["val-best"]
    assert rows[0].baseline.trial_ids == ["base"]

    oracle = Selection.make(oracle=True)
    settings, rows = rows_for(trials, oracle)
    assert rows[0].augmented.trial_ids == ["test-best"]
    assert oracle.metric == "test_out/dice" and ORACLE_LABEL in oracle.label
    # The label is in every output that shows the selection.
    md = render_markdown(rows, oracle, title="t", archs=["unet"], n_boot=500)
    headings = [line for line in md.splitlines() if line.startswith("#")]
    assert headings and all(ORACLE_LABEL in h for h in headings)
    assert ORACLE_LABEL in render_latex(rows, oracle, title="t", archs=["unet"], n_boot=500)
    csv_rows = list(csv.DictReader(io.StringIO(render_csv(rows, oracle))))
    assert all(ORACLE_LABEL in r["selection"] for r in csv_rows)
    assert ORACLE_LABEL in best_configs(settings, oracle)["selection"]
    assert ORACLE_LABEL not in render_markdown(
        rows_for(trials, Selection.make())[1],
        Selection.make(),
        title="t",
        archs=["unet"],
        n_boot=500,
    )


def test_selection_uses_the_best_checkpoint_not_the_last_epoch_validation_score():
    # results.json's val/dice is the last epoch's; the trial's test scores come from its best
    # checkpoint, so selection must use that checkpoint's validation score.
    trials = [
        make_trial("base", p=0.0),
        make_trial("late-spike", p=0.4, val=0.55, last_val=0.90),
        make_trial("steady", p=0.6, val=0.65, last_val=0.60),
    ]
    _, rows = rows_for(trials, Selection.make())
    assert rows[0].augmented.trial_ids == ["steady"]


def test_selection_averages_seeds_so_one_lucky_seed_does_not_win():
    trials = [
        make_trial("base", p=0.0),
        make_trial("lucky-0", p=0.4, seed=0, val=0.90),
        make_trial("lucky-1", p=0.4, seed=1, val=0.20),
        make_trial("steady-0", p=0.6, seed=0, val=0.60),
        make_trial("steady-1", p=0.6, seed=1, val=0.62),
    ]
    settings, rows = rows_for(trials, Selection.make())
    assert rows[0].augmented.p == 0.6 and rows[0].augmented.n_seeds == 2
    assert rows[0].augmented.mean("val/dice") == pytest.approx(0.61)
    assert len(settings) == 3


def test_selection_metric_must_be_a_validation_metric():
    assert Selection.make("val/iou").metric == "val/iou"
    with pytest.raises(ValueError, match="val/dice"):
        Selection.make("test_out/dice")
    with pytest.raises(ValueError, match="oracle"):
        Selection.make("val/iou", oracle=True)


# --- best configs -----------------------------------------------------------------------------------


def test_best_configs_per_fold_and_over_folds_are_runnable_trial_configs():
    trials = [
        make_trial("u2-0", centre=2, p=0.0, val=0.50),
        make_trial("u2-5", centre=2, p=0.5, val=0.60),
        make_trial("u6-0", centre=6, p=0.0, val=0.45),
        make_trial("u6-5", centre=6, p=0.5, val=0.30),  # p=0 wins on average: 0.475 vs 0.45
        make_trial("d2-0", arch="deeplabv3plus", centre=2, p=0.0, val=0.4),
    ]
    out = best_configs(group_settings(trials), Selection.make())
    configs = out["configs"]
    assert set(configs) == {
        "unet/C2",
        "unet/C6",
        "unet/all-folds",
        "deeplabv3plus/C2",
        "deeplabv3plus/all-folds",
    }
    for entry in configs.values():
        TrialConfig.model_validate(entry)
    assert configs["unet/C2"]["masking"]["p"] == 0.5
    assert configs["unet/C6"]["masking"]["p"] == 0.0
    assert configs["unet/all-folds"]["masking"]["p"] == 0.0
    assert configs["unet/all-folds"]["held_out_centre"] == 2
    assert "first fold" in out["notes"]["unet/all-folds"]
    assert out["scores"]["unet/all-folds"]["mean val/dice over folds"] == pytest.approx(0.475)
    # Round-trips through YAML as `camsweep train --config ... --entry unet/C2` reads it.
    loaded = yaml.safe_load(yaml.safe_dump(out, sort_keys=False))
    assert TrialConfig.model_validate(loaded["configs"]["unet/C2"]).masking.p == 0.5


def test_no_over_folds_entry_when_no_setting_ran_on_every_fold():
    trials = [
        make_trial("a", centre=2, p=0.3, val=0.5),
        make_trial("b", centre=6, p=0.7, val=0.5),
    ]
    out = best_configs(group_settings(trials), Selection.make())
    assert "unet/all-folds" not in out["configs"]
    assert out["notes"]["unet/all-folds"].startswith("not written")


# --- tables -----------------------------------------------------------------------------------------


def test_table_row_bolds_the_better_arm_and_ci_uses_images_aligned_by_index():
    trials = [
        make_trial("base", p=0.0, test=0.50),
        make_trial("aug", p=0.4, val=0.6, test=0.55, shuffle=1),  # stored in another image order
    ]
    settings, rows = rows_for(trials, Selection.make(), seed=3)
    (row,) = rows
    base, aug = trials[0].per_image, trials[1].per_image
    order = np.argsort(aug["test_out/index"])
    expected = paired_bootstrap(
        aug["test_out/dice"][order], base["test_out/dice"], n_boot=500, seed=3
    )
    assert row.ci == expected
    assert row.ci.estimate == pytest.approx(0.05)
    # Paired: the shared image difficulty cancels, so the CI is tight around +0.05.
    assert row.ci.low > 0.03 and row.ci.high < 0.07

    md = render_markdown(rows, Selection.make(), title="t", archs=["unet"], n_boot=500)
    (line,) = [ln for ln in md.splitlines() if ln.startswith("| C2 |") and "[" in ln]
    assert "| 0.5000 | **0.5500** (0.4) |" in line
    assert "+0.0500 [" in line
    tex = render_latex(rows, Selection.make(), title="t", archs=["unet"], n_boot=500)
    assert r"\textbf{0.5500} (0.4)" in tex and "val/dice" in tex


def test_several_seeds_give_a_two_level_ci_and_the_caption_says_so():
    trials = [make_trial(f"b{s}", p=0.0, seed=s, test=0.5 + 0.01 * s) for s in range(3)]
    trials += [make_trial(f"a{s}", p=0.5, seed=s, val=0.6, test=0.55) for s in range(3)]
    _, rows = rows_for(trials, Selection.make())
    assert rows[0].ci.two_level and rows[0].ci.n_seeds == (3, 3)
    md = render_markdown(rows, Selection.make(), title="t", archs=["unet"], n_boot=500)
    assert "two-level" in md and "3 seed(s)" in md


def test_table_has_a_row_per_held_out_centre_and_marks_a_missing_arm():
    trials = [
        make_trial("u1b", centre=1, p=0.0),
        make_trial("u1a", centre=1, p=0.5),
        make_trial("u3b", centre=3, p=0.0),  # no augmented arm finished on C3
    ]
    _, rows = rows_for(trials, Selection.make())
    assert [(r.held_out, r.augmented is None, r.ci is None) for r in rows] == [
        (1, False, False),
        (3, True, True),
    ]
    md = render_markdown(rows, Selection.make(), title="t", archs=["unet"], n_boot=500)
    c3 = [ln for ln in md.splitlines() if ln.startswith("| C3 |")]
    assert len(c3) == 2 and all("–" in ln for ln in c3)
    csv_rows = list(csv.DictReader(io.StringIO(render_csv(rows, Selection.make()))))
    assert [r["held_out_centre"] for r in csv_rows] == ["1", "3"]
    assert csv_rows[1]["ood_dice_diff"] == ""


# --- trial states, cost, importance -----------------------------------------------------------------


def test_left_out_reasons_name_the_trial_state():
    def record(status, **kw):
        return TrialRecord("t", status, {}, Path("/nonexistent"), **kw)

    assert "errored: boom" in leave_out_reason(record("ERROR", error="boom"))
    assert "still running (epoch 3)" in leave_out_reason(
        record("RUNNING", last_result={"epoch": 3})
    )
    assert "not started" in leave_out_reason(record("PENDING"))
    assert "stopped early" in leave_out_reason(record("TERMINATED", last_result={"epoch": 10}))
    finished = record("TERMINATED", last_result={"epoch": 300, "test_out/dice": 0.7})
    assert "results.json missing" in leave_out_reason(finished)


def _spec(**changes) -> SweepSpec:
    raw = {
        "name": "s",
        "model": {"variant": "tiny"},
        "space": {"arch": {"grid": ["unet"]}, "held_out_centre": {"grid": [2, 6]}, "p": 0.5},
    }
    raw.update(changes)
    return SweepSpec.model_validate(raw)


def test_cost_is_run_time_times_resources_per_fold_and_arm(tmp_path):
    def record(tid, centre, p, seconds, *, in_file=True):
        path = tmp_path / tid
        path.mkdir()
        axes = {"arch": "unet", "held_out_centre": centre, "p": p}
        if in_file and seconds is not None:
            lines = [{"time_total_s": seconds / 2}, {"time_total_s": seconds}]
            (path / "result.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
        last = {"time_total_s": seconds} if not in_file and seconds else {}
        return TrialRecord(tid, "TERMINATED", axes, path, last_result=last)

    records = [
        record("a", 2, 0.0, 3600),
        record("b", 2, 0.5, 1800, in_file=False),  # only in Tune's experiment state
        record("c", 6, 0.5, 7200),
        record("d", 6, 0.5, None),  # never reported
    ]
    space = {
        "arch": {"grid": ["unet"]},
        "held_out_centre": {"grid": [2, 6]},
        "p": {"grid": [0.0, 0.5]},
    }
    cost = compute_cost(_spec(space=space, resources={"cpu": 4, "gpu": 0.5}), records)
    hours = {(r["group_by"], r["value"]): r["hours"] for r in cost.rows}
    assert cost.unit == "GPU-hours" and cost.untimed == 1
    assert hours[("held_out_centre", "C2")] == pytest.approx(0.75)
    assert hours[("held_out_centre", "C6")] == pytest.approx(1.0)
    assert hours[("arm", "p=0 (baseline)")] == pytest.approx(0.5)
    assert hours[("arm", "p=0.5")] == pytest.approx(1.25)
    assert hours[("total", "all")] == pytest.approx(1.75)
    # An architecture's own share counts for its trials (here all are unet, at a whole GPU).
    per_arch = {"cpu": 4, "gpu": 0.5, "per_arch": {"unet": {"gpu": 1}}}
    whole = compute_cost(_spec(space=space, resources=per_arch), records)
    assert {(r["group_by"], r["value"]): r["hours"] for r in whole.rows}[
        ("total", "all")
    ] == pytest.approx(3.5)
    cpu = compute_cost(_spec(space=space, resources={"cpu": 2, "gpu": 0}), records)
    assert cpu.unit == "CPU-hours"
    assert {(r["group_by"], r["value"]): r["hours"] for r in cpu.rows}[
        ("total", "all")
    ] == pytest.approx(7.0)


def test_last_json_line_reads_the_tail_of_a_long_log(tmp_path):
    path = tmp_path / "result.json"
    path.write_text("".join(json.dumps({"i": i, "pad": "x" * 500}) + "\n" for i in range(300)))
    assert _last_json_line(path)["i"] == 299


def test_optuna_importance_per_group_ranks_the_axis_that_matters():
    spec = _spec(
        space={
            "arch": {"grid": ["unet"]},
            "held_out_centre": {"grid": [2, 6]},
            "p": {"uniform": [0.0, 1.0]},
            "threshold": {"uniform": [0.2, 0.8]},
        },
        search={"algorithm": "optuna", "num_samples": 20},
    )
    rng = np.random.default_rng(1)
    trials = []
    for i in range(20):
        p, th = float(rng.uniform(0, 1)), float(rng.uniform(0.2, 0.8))
        trials.append(make_trial(f"c2-{i}", centre=2, p=p, threshold=th, val=0.2 + 0.6 * p))
    trials.append(make_trial("c6-0", centre=6, p=0.3, threshold=0.5))
    rows, notes = param_importance(spec, trials, Selection.make())
    c2 = {r["param"]: r["importance"] for r in rows if r["group"] == "unet/C2"}
    assert set(c2) == {"p", "threshold"} and c2["p"] > c2["threshold"]
    (c6,) = [r for r in rows if r["group"] == "unet/C6"]
    assert c6["param"] == "" and "skipped" in c6["note"] and c6["n_trials"] == 1
    assert any("unet/C6" in n for n in notes)


# --- end to end -------------------------------------------------------------------------------------


def tiny_optuna_spec(tmp_path: Path) -> dict:
    """4 tiny trials: unet × held-out {2, 6} × p {0, 0.5}, the seed sampled by Optuna."""
    from tests.conftest import tiny_spec

    raw = tiny_spec(
        tmp_path, name="tiny-export", search={"algorithm": "optuna", "num_samples": 1, "seed": 0}
    )
    raw["space"]["seed"] = {"choice": [0, 1]}
    return raw


@pytest.mark.slow
def test_export_of_a_real_sweep_writes_every_file_and_lists_left_out_trials(
    tmp_path, local_ray, capsys
):
    from sweeps.cli import main
    from sweeps.launch import run_sweep
    from sweeps.spec import SPEC_FILE, load_spec
    from sweeps.status import read_run

    spec = load_spec("tiny.yaml", raw=tiny_optuna_spec(tmp_path), local_gpus=0)
    run_dir = run_sweep(spec)
    assert (run_dir / SPEC_FILE).exists()
    assert main(["export", str(run_dir), "--n-boot", "500"]) == 0
    printed = capsys.readouterr().out
    out = run_dir / "export"
    for name in (
        "best_configs.yaml",
        "table.md",
        "table.csv",
        "table.tex",
        "dice_vs_p.png",
        "cost.csv",
        "importance.csv",
    ):
        assert (out / name).stat().st_size > 0, name
    assert str(out) in printed and "4 used, 0 left out" in printed
    best = yaml.safe_load((out / "best_configs.yaml").read_text())
    assert best["selection"] == "validation: val/dice"
    assert {"unet/C2", "unet/C6", "unet/all-folds"} <= set(best["configs"])
    for entry in best["configs"].values():
        TrialConfig.model_validate(entry)
    table = list(csv.DictReader((out / "table.csv").open()))
    assert sorted(r["held_out_centre"] for r in table) == ["2", "6"]
    for r in table:
        assert float(r["ood_dice_diff_ci_low"]) <= float(r["ood_dice_diff_ci_high"])
    cost = list(csv.DictReader((out / "cost.csv").open()))
    assert {r["unit"] for r in cost} == {"CPU-hours"}
    total = next(r for r in cost if r["group_by"] == "total")
    assert int(total["trials"]) == 4 and float(total["hours"]) > 0
    # One trial per Optuna group: too few for importances, so each group is skipped, saying so.
    importance = list(csv.DictReader((out / "importance.csv").open()))
    groups = {f"unet/C{k}/p={p}" for k in (2, 6) for p in (0.0, 0.5)}
    assert {r["group"] for r in importance} == groups
    assert all(r["note"].startswith("skipped") for r in importance)

    # A copy with one trial's results.json gone: that trial is left out and named.
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("export"))
    victim = read_run(copy)[0]
    (victim.path / "results.json").unlink()
    assert main(["export", str(copy), "--oracle", "--n-boot", "500"]) == 0
    printed = capsys.readouterr().out
    assert "3 used, 1 left out" in printed
    assert f"left out {victim.trial_id}" in printed and "results.json missing" in printed
    oracle_md = (copy / "export-oracle" / "table.md").read_text()
    assert victim.trial_id in oracle_md and ORACLE_LABEL in oracle_md
    assert not (copy / "export").exists()  # the oracle tables never replace the honest ones
