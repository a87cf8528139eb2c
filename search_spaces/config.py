"""The typed settings of a sweep's search and scheduler (the ``search`` and ``scheduler``
sections of a spec): their defaults and valid names live here only. Ray-free, so a spec
validates without starting anything."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trainables.config import Strict


class SearchConfig(Strict):
    """How trials are drawn: per group (grid point of the grid axes), ``num_samples`` each."""

    algorithm: Literal["grid", "random", "optuna"] = Field(
        "grid", description="grid/random: Tune's variant generator; optuna: one TPE study per group"
    )
    num_samples: int = Field(1, ge=1, description="trials per group (grid: repeats per point)")
    seed: int = Field(0, description="seeds the random draws and each group's TPE sampler")
    metric: str = Field("val/dice", description="the validation metric that is maximised")
    storage: str | None = Field(None, description="Optuna RDB URL, e.g. sqlite:///optuna.db")


class SchedulerConfig(Strict):
    """Early stopping: ``fifo`` runs every trial to the end; ``asha`` stops poor trials, with
    one ASHA bracket per group so trials are only compared within a fold and architecture."""

    name: Literal["fifo", "asha"] = Field("fifo", description="fifo | asha (per group)")
    grace_period: int = Field(10, ge=1, description="epochs before ASHA may stop a trial")
    reduction_factor: float = Field(3.0, gt=1, description="ASHA keeps 1 in this many per rung")
