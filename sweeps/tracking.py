"""Watching a sweep: the one-line progress summary (W&B tracking joins it here)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ray import tune

from search_spaces.grouping import group_key, group_label


class SweepSummary(tune.Callback):
    """Prints ``sweep: 3/12 done, 2 running, 0 failed | best val/dice per group`` as trials move.

    Printed when a trial finishes or fails, and at most every ``every_s`` seconds on results.
    """

    def __init__(self, grid_axes: Sequence[str], metric: str, every_s: float = 30.0):
        self.grid_axes = list(grid_axes)
        self.metric = metric
        self.every_s = every_s
        self.best: dict[str, float] = {}
        self._last = 0.0

    def _note(self, trial, result: dict | None) -> None:
        if result and self.metric in result:
            label = group_label(group_key(trial.config, self.grid_axes))
            self.best[label] = max(self.best.get(label, float("-inf")), float(result[self.metric]))

    def line(self, trials) -> str:
        states = [t.status for t in trials]
        done, running = states.count("TERMINATED"), states.count("RUNNING")
        failed = states.count("ERROR")
        best = "; ".join(f"{g} {v:.3f}" for g, v in sorted(self.best.items()))
        return f"sweep: {done}/{len(trials)} done, {running} running, {failed} failed" + (
            f" | best {self.metric}: {best}" if best else ""
        )

    def _print(self, trials, force: bool) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.every_s:
            self._last = now
            print(self.line(trials), flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._note(trial, result)
        self._print(trials, force=False)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._note(trial, trial.last_result)
        self._print(trials, force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._print(trials, force=True)

    def on_experiment_end(self, trials, **info):
        print(self.line(trials), flush=True)
