"""From parsed axes and the search/scheduler settings to Tune's search algorithm and scheduler."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator, Searcher

from search_spaces.axes import Axis
from search_spaces.config import SchedulerConfig, SearchConfig
from search_spaces.grouped import GroupedScheduler, GroupedSearcher, SchedulerState
from search_spaces.grouping import expand_groups


@dataclass
class SearchSetup:
    param_space: dict[str, Any]
    search_alg: Searcher | BasicVariantGenerator
    scheduler: TrialScheduler
    num_samples: int  # what Tune's TuneConfig.num_samples must be
    groups: list[dict[str, Any]]
    grid_axes: list[str]
    callbacks: list[Any]  # Tune callbacks the search needs (the scheduler's snapshot)


def tune_domain(axis: Axis):
    """Tune's search-space object for a sampled or grid axis (constants pass through)."""
    if axis.form == "grid":
        return tune.grid_search(list(axis.values))
    if axis.form == "choice":
        return tune.choice(list(axis.values))
    if axis.form == "uniform":
        return tune.uniform(*axis.values)
    if axis.form == "loguniform":
        return tune.loguniform(*axis.values)
    return axis.values[0]


def _optuna_searcher(
    sampled: Sequence[Axis], *, seed: int, metric: str, mode: str, storage: str | None, study: str
):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    def make(index: int, label: str) -> Searcher:
        return OptunaSearch(
            space={a.name: tune_domain(a) for a in sampled},
            metric=metric,
            mode=mode,
            # One seed per group so groups explore independently but reproducibly.
            sampler=optuna.samplers.TPESampler(seed=seed + index),
            study_name=f"{study}[{label}]",
            storage=optuna.storages.RDBStorage(storage) if storage else None,
        )

    return make


def build_search(
    axes: Sequence[Axis],
    search: SearchConfig,
    scheduler: SchedulerConfig,
    *,
    max_t: int,
    mode: str = "max",
    study_name: str = "camsweep",
) -> SearchSetup:
    """Builds the search algorithm and scheduler of a sweep.

    ``search.num_samples`` is per group; grid and random search use Tune's variant generator
    (grid axes expanded, sampled axes drawn with ``search.seed``); optuna runs one TPE study per
    group. ``max_t``: the trials' epochs (ASHA's last rung).
    """
    algorithm, num_samples, seed, metric = (
        search.algorithm, search.num_samples, search.seed, search.metric
    )  # fmt: skip
    groups = expand_groups(axes)
    grid_axes = [a.name for a in axes if a.is_grid]
    if algorithm == "optuna":
        constants = {a.name: a.values[0] for a in axes if a.form == "constant"}
        make = _optuna_searcher(
            [a for a in axes if a.is_sampled],
            seed=seed,
            metric=metric,
            mode=mode,
            storage=search.storage,
            study=study_name,
        )
        search_alg = GroupedSearcher(
            groups, make, num_samples, metric=metric, mode=mode, constants=constants
        )
        param_space: dict[str, Any] = {}
        total = len(groups) * num_samples
    else:
        search_alg = BasicVariantGenerator(random_state=seed)
        param_space = {a.name: tune_domain(a) for a in axes}
        total = num_samples  # Tune repeats the whole grid num_samples times
    if scheduler.name == "asha":
        sched: TrialScheduler = GroupedScheduler(
            grid_axes,
            lambda: ASHAScheduler(
                time_attr="epoch",
                max_t=max_t,
                grace_period=min(scheduler.grace_period, max_t),
                reduction_factor=scheduler.reduction_factor,
            ),
        )
    else:
        sched = FIFOScheduler()
    callbacks = [SchedulerState(sched)] if isinstance(sched, GroupedScheduler) else []
    return SearchSetup(param_space, search_alg, sched, total, groups, grid_axes, callbacks)
