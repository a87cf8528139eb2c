"""Grouped search: each (architecture, fold) group has its own study and its own ASHA brackets."""

from __future__ import annotations

import optuna
import pytest
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher

from search_spaces.axes import parse_axis
from search_spaces.build import build_search
from search_spaces.config import SchedulerConfig, SearchConfig
from search_spaces.grouping import expand_groups, group_key, group_label


def axes(**space):
    parsed = [parse_axis(name, raw) for name, raw in space.items()]
    assert all(not errs for _, errs in parsed), parsed
    return [a for a, _ in parsed]


def test_groups_are_the_grid_product():
    ax = axes(arch={"grid": ["unet", "sdnet"]}, held_out_centre={"grid": [1, 2, 3]}, p=0.5)
    groups = expand_groups(ax)
    assert len(groups) == 6 and {"arch": "sdnet", "held_out_centre": 3} in groups
    key = group_key({"arch": "unet", "held_out_centre": 2, "p": 0.3}, ["arch", "held_out_centre"])
    assert group_label(key) == "unet/C2"
    assert expand_groups(axes(p={"uniform": [0, 1]})) == [{}]


def _optuna_setup(num_samples=3, seed=0):
    return build_search(
        axes(arch={"grid": ["unet", "sdnet"]}, p={"uniform": [0.0, 1.0]}, threshold=0.5),
        SearchConfig(algorithm="optuna", num_samples=num_samples, seed=seed),
        SchedulerConfig(),
        max_t=1,
    )


def test_grouped_optuna_gives_each_group_its_own_study():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    setup = _optuna_setup()
    searcher = setup.search_alg
    assert setup.num_samples == 6  # num_samples is per group
    suggestions = {f"t{i}": searcher.suggest(f"t{i}") for i in range(6)}
    assert searcher.suggest("t6") == Searcher.FINISHED
    by_arch = {}
    for tid, cfg in suggestions.items():
        assert cfg["threshold"] == 0.5 and 0.0 <= cfg["p"] <= 1.0
        by_arch.setdefault(cfg["arch"], []).append(tid)
    assert {k: len(v) for k, v in by_arch.items()} == {"unet": 3, "sdnet": 3}
    for tid in by_arch["unet"]:
        searcher.on_trial_complete(tid, {"val/dice": 0.9, "epoch": 1})
    studies = {label: s._ot_study for label, s in zip(searcher.labels, searcher.searchers)}
    done = {
        label: sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
        for label, study in studies.items()
    }
    assert done == {"unet": 3, "sdnet": 0}  # results never reach the other group's study
    # Seeded: the same sweep suggests the same points.
    again = _optuna_setup().search_alg
    assert [again.suggest(f"t{i}")["p"] for i in range(6)] == [
        suggestions[f"t{i}"]["p"] for i in range(6)
    ]


def test_grouped_searcher_save_restore(tmp_path):
    searcher = _optuna_setup().search_alg
    first = [searcher.suggest(f"t{i}") for i in range(2)]
    path = tmp_path / "searcher.pkl"
    searcher.save(str(path))
    restored = _optuna_setup(seed=99).search_alg
    restored.restore(str(path))
    assert restored.suggested == searcher.suggested
    assert [searcher.suggest(f"t{i}") for i in (2, 3)] == [
        restored.suggest(f"t{i}") for i in (2, 3)
    ]
    assert first[0]["arch"] != first[1]["arch"]  # round-robin over groups


class FakeTrial:
    def __init__(self, trial_id, config):
        self.trial_id, self.config = trial_id, config


def _feed(scheduler, trials_and_values):
    decisions = {}
    for trial, value in trials_and_values:
        scheduler.on_trial_add(None, trial)
        decisions[trial.trial_id] = scheduler.on_trial_result(
            None, trial, {"epoch": 1, "val/dice": value}
        )
    return decisions


def _trials():
    easy = [FakeTrial(f"a{i}", {"held_out_centre": 1, "p": i / 10}) for i in range(3)]
    hard = FakeTrial("b0", {"held_out_centre": 4, "p": 0.5})
    weak_easy = FakeTrial("a9", {"held_out_centre": 1, "p": 0.9})
    return [(easy[0], 0.90), (easy[1], 0.80), (easy[2], 0.85), (hard, 0.10), (weak_easy, 0.10)]


def _asha_setup():
    setup = build_search(
        axes(held_out_centre={"grid": [1, 4]}, p={"uniform": [0, 1]}),
        SearchConfig(algorithm="random", num_samples=4),
        SchedulerConfig(name="asha", grace_period=1, reduction_factor=2),
        max_t=4,
    )
    setup.scheduler.set_search_properties("val/dice", "max")
    return setup


def test_grouped_asha_never_compares_across_groups():
    setup = _asha_setup()
    decisions = _feed(setup.scheduler, _trials())
    # The hard fold's trial scores far below the easy fold's, but only competes with its own fold.
    assert decisions["b0"] == TrialScheduler.CONTINUE
    # Pruning still works inside a group.
    assert decisions["a9"] == TrialScheduler.STOP
    assert set(setup.scheduler.children) == {(("held_out_centre", 1),), (("held_out_centre", 4),)}


def test_a_shared_asha_would_have_stopped_the_hard_fold():
    # The control for the test above: one ASHA over all trials stops the hard fold's trial.
    shared = ASHAScheduler(time_attr="epoch", max_t=4, grace_period=1, reduction_factor=2)
    shared.set_search_properties("val/dice", "max")
    assert _feed(shared, _trials())["b0"] == TrialScheduler.STOP


def test_a_restored_grouped_asha_keeps_its_rungs_and_decides_as_the_uninterrupted_one():
    straight = _asha_setup()
    before, (late, late_value) = _trials()[:3], _trials()[4]
    _feed(straight.scheduler, before)
    (snapshot,) = straight.callbacks  # what Tune stores with each experiment snapshot
    state = snapshot.get_state()
    # The driver dies; `resume` rebuilds the scheduler from its start state, then Tune restores
    # the callbacks' states and re-adds the trials it knows of.
    resumed = _asha_setup()
    resumed.callbacks[0].set_state(state)
    for trial, _ in before:
        resumed.scheduler.on_trial_add(None, trial)
    rungs = resumed.scheduler.children[(("held_out_centre", 1),)]._brackets[0]._rungs
    assert {t.trial_id: v for t, v in before} == {k: v for _, r in rungs for k, v in r.items()}
    decisions = [_feed(s.scheduler, [(late, late_value)])["a9"] for s in (straight, resumed)]
    assert decisions == [TrialScheduler.STOP, TrialScheduler.STOP]
    # Without the snapshot (what Tune's restore alone gives) the weak trial would run on.
    assert _feed(_asha_setup().scheduler, [(late, late_value)])["a9"] == TrialScheduler.CONTINUE


@pytest.mark.parametrize("storage", ["sqlite", "memory"])
def test_a_resumed_optuna_study_has_no_orphaned_trial_and_matches_tunes_trials(tmp_path, storage):
    url = f"sqlite:///{tmp_path / 'optuna.db'}" if storage == "sqlite" else None

    def build():
        return build_search(
            axes(held_out_centre={"grid": [2]}, p={"uniform": [0, 1]}),
            SearchConfig(algorithm="optuna", num_samples=5, storage=url),
            SchedulerConfig(),
            max_t=2,
        ).search_alg

    result = {"val/dice": 0.5, "epoch": 2}
    searcher = build()
    searcher.suggest("t1"), searcher.suggest("t2")
    searcher.on_trial_complete("t1", result)
    searcher.save_to_dir(str(tmp_path), "s")  # Tune's experiment snapshot
    searcher.suggest("t3")  # asked for after the snapshot: Tune's restored state has no t3
    searcher.on_trial_complete("t2", result)  # finished after it: Tune resumes and re-reports t2
    # The driver is killed; `camsweep resume` restores the snapshot.
    resumed = build()
    resumed.restore_from_dir(str(tmp_path))
    resumed.on_trial_complete("t2", result)
    for trial_id in ("t4", "t5", "t6"):
        resumed.suggest(trial_id)
        resumed.on_trial_complete(trial_id, result)
    (sub,) = resumed.searchers
    trials = sub._ot_study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert optuna.trial.TrialState.RUNNING not in states, states
    complete = {t.number for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
    # One completed study trial per completed Tune trial, and each is the one Tune ran.
    owners = {tid: t.number for tid, t in sub._ot_trials.items()}
    assert complete == {owners[tid] for tid in ("t1", "t2", "t4", "t5", "t6")}
    assert len(trials) == (6 if storage == "sqlite" else 5)  # + the failed orphan t3


def test_grid_search_repeats_each_point_num_samples_times():
    setup = build_search(
        axes(
            arch={"grid": ["unet", "sdnet"]}, seed={"grid": [0, 1]}, lr={"loguniform": [1e-5, 1e-3]}
        ),
        SearchConfig(algorithm="grid", num_samples=2),
        SchedulerConfig(),
        max_t=1,
    )
    assert setup.num_samples == 2 and len(setup.groups) == 4
    assert setup.param_space["arch"] == {"grid_search": ["unet", "sdnet"]}


@pytest.mark.parametrize(
    ("make", "valid"),
    [
        (lambda: SearchConfig(algorithm="bayes"), "'grid', 'random' or 'optuna'"),
        (lambda: SchedulerConfig(name="pbt"), "'fifo' or 'asha'"),
    ],
)
def test_unknown_algorithm_or_scheduler(make, valid):
    with pytest.raises(ValueError, match=valid):
        make()
