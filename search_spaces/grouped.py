"""A searcher and a scheduler that keep every group (grid point) separate.

:class:`GroupedSearcher` runs one sub-searcher (an Optuna TPE study) per group and routes each
trial's results back to the study that suggested it. :class:`GroupedScheduler` runs one scheduler
(an ASHA bracket set) per group and routes each trial's results to its group's scheduler only.

Both survive a driver kill exactly. Tune snapshots the searcher with its experiment state, but an
Optuna study in an RDB storage (SQLite) lives on past the snapshot: trials asked for after it are
left RUNNING forever — :meth:`GroupedSearcher.restore` fails them, as Optuna's own stale-trial
handling would. Tune does not snapshot the scheduler at all: ``Tuner.restore`` rebuilds it from
its start state (ray-project/ray#30838), so a resumed ASHA would decide with empty rungs —
:class:`SchedulerState` carries the children in Tune's callback snapshot instead.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Sequence
from typing import Any

from ray.tune import Callback
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from search_spaces.grouping import GroupKey, group_key, group_label

log = logging.getLogger("camsweep.search")


class GroupedSearcher(Searcher):
    """Round-robin over groups; each group gets ``num_samples`` suggestions from its own searcher.

    Args:
        groups: grid values of each group (from ``expand_groups``).
        make_searcher: builds the sub-searcher of group ``i`` with label ``label``.
        num_samples: suggestions per group.
        constants: values merged into every suggestion (constant axes).
    """

    def __init__(
        self,
        groups: Sequence[dict[str, Any]],
        make_searcher: Callable[[int, str], Searcher],
        num_samples: int,
        *,
        metric: str,
        mode: str,
        constants: dict[str, Any] | None = None,
    ):
        super().__init__(metric=metric, mode=mode)
        self.groups = [dict(g) for g in groups]
        self.labels = [group_label(tuple(g.items())) for g in self.groups]
        self.searchers = [make_searcher(i, label) for i, label in enumerate(self.labels)]
        for s in self.searchers:
            s.set_search_properties(metric, mode, {})
        self.num_samples = num_samples
        self.constants = dict(constants or {})
        self.suggested = [0] * len(self.groups)
        self.trial_group: dict[str, int] = {}

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        # Sub-searchers got their spaces at construction; Tune's param_space holds constants only.
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None | str:
        open_groups = [i for i, n in enumerate(self.suggested) if n < self.num_samples]
        if not open_groups:
            return Searcher.FINISHED
        # Fewest suggestions first: groups progress evenly, whatever the concurrency.
        for i in sorted(open_groups, key=lambda g: (self.suggested[g], g)):
            sampled = self.searchers[i].suggest(trial_id)
            if sampled is None or sampled == Searcher.FINISHED:
                continue
            self.suggested[i] += 1
            self.trial_group[trial_id] = i
            return {**self.constants, **self.groups[i], **sampled}
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.trial_group:
            self.searchers[self.trial_group[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if trial_id in self.trial_group:
            self.searchers[self.trial_group[trial_id]].on_trial_complete(trial_id, result, error)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(self.__dict__, fh)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            self.__dict__.update(pickle.load(fh))
        for label, searcher in zip(self.labels, self.searchers):
            failed = fail_orphaned_trials(searcher)
            if failed:
                log.warning(
                    "%s: %d Optuna trial(s) asked for after the last snapshot (the driver was "
                    "killed) marked FAIL: %s",
                    label,
                    len(failed),
                    failed,
                )


def fail_orphaned_trials(searcher: Searcher) -> list[int]:
    """Marks FAIL the RUNNING trials of an Optuna searcher's study that no Tune trial of the
    restored snapshot owns; returns their numbers. A study in memory was restored with the
    snapshot and has none; one in an RDB storage kept every trial asked for since."""
    study = getattr(searcher, "_ot_study", None)  # ray's OptunaSearch; other searchers: nothing
    owned = getattr(searcher, "_ot_trials", {})
    if study is None:
        return []
    from optuna.trial import TrialState

    mine = {t._trial_id for t in owned.values()}
    orphans = [
        t.number
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t._trial_id not in mine
    ]
    for number in orphans:
        study.tell(number, state=TrialState.FAIL)
    return orphans


class GroupedScheduler(FIFOScheduler):
    """One child scheduler per group; trials start in FIFO order.

    Args:
        grid_axes: the axis names that define a group.
        make_scheduler: builds a fresh child scheduler (e.g. ASHA) for a new group.
    """

    def __init__(self, grid_axes: Sequence[str], make_scheduler: Callable[[], TrialScheduler]):
        super().__init__()
        self.grid_axes = list(grid_axes)
        self.make_scheduler = make_scheduler
        self.children: dict[GroupKey, TrialScheduler] = {}
        self._properties: tuple[str | None, str | None] = (None, None)

    def child(self, trial) -> TrialScheduler:
        key = group_key(trial.config, self.grid_axes)
        if key not in self.children:
            sched = self.make_scheduler()
            metric, mode = self._properties
            if metric is not None:
                sched.set_search_properties(metric, mode)
            self.children[key] = sched
        return self.children[key]

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        self._properties = (metric, mode)
        for sched in self.children.values():
            sched.set_search_properties(metric, mode, **spec)
        return True

    def on_trial_add(self, tune_controller, trial) -> None:
        self.child(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial) -> None:
        self.child(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self.child(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self.child(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self.child(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        parts = [f"{group_label(k)}: {s.debug_string()}" for k, s in self.children.items()]
        return "Grouped scheduler — " + ("; ".join(parts) or "no trials yet")


class SchedulerState(Callback):
    """Saves a :class:`GroupedScheduler`'s children (each group's ASHA rungs and trial
    bookkeeping) with every Tune experiment snapshot and puts them back on restore, so stop
    decisions after ``camsweep resume`` are made from every result reported before the kill.

    The callback and the scheduler reach ``Tuner.restore`` in one pickle (``tuner.pkl``), so the
    restored callback still holds the scheduler the restored run uses.
    """

    def __init__(self, scheduler: GroupedScheduler):
        self.scheduler = scheduler

    def get_state(self) -> dict | None:
        return {"children": pickle.dumps(self.scheduler.children)}

    def set_state(self, state: dict) -> None:
        self.scheduler.children = pickle.loads(state["children"])
