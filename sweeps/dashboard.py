"""The sweep's W&B workspace, defined as code with ``wandb-workspaces``.

Panels: validation Dice curves grouped by p; out-of-distribution Dice by held-out centre and by
architecture; parallel coordinates of p, threshold and learning rate → validation Dice (the view
W&B Sweeps users expect); the trials' example strips and the folds' CAM figures. Every panel
names only keys the trials log (checked by the tests against real offline runs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# Config keys are the trial config's dotted paths (W&B flattens nested config with dots).
CONFIG_KEYS = ("masking.p", "masking.threshold", "train.lr", "held_out_centre", "model.arch")
HISTORY_KEYS = ("epoch", "val/dice", "train/loss")
SUMMARY_KEYS = ("val/dice", "test_out/dice", "test_in/dice")
MEDIA_KEYS = ("examples", "cams")


@dataclass
class DashboardPlan:
    """What the workspace shows, as data: a title and the keys of every panel."""

    name: str
    panels: list[tuple[str, str, list[str]]]  # (section, panel title, referenced keys)

    def format(self) -> str:
        lines = [f"workspace {self.name!r}:"]
        for section, title, keys in self.panels:
            lines.append(f"  [{section}] {title}: {', '.join(keys)}")
        return "\n".join(lines)


def build_workspace(entity: str, project: str, group: str):
    """The workspace object (not saved) and its plan."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    validation = [
        wr.LinePlot(
            title="Validation Dice by p",
            x="epoch",
            y=["val/dice"],
            groupby=wr.Config("masking.p"),
            groupby_aggfunc="mean",
            groupby_rangefunc="stderr",
        ),
        wr.LinePlot(title="Training loss", x="epoch", y=["train/loss"]),
    ]
    generalisation = [
        wr.BarPlot(
            title="Out-of-distribution Dice by held-out centre",
            metrics=[wr.SummaryMetric("test_out/dice")],
            groupby=wr.Config("held_out_centre"),
        ),
        wr.BarPlot(
            title="Out-of-distribution Dice by architecture",
            metrics=[wr.SummaryMetric("test_out/dice")],
            groupby=wr.Config("model.arch"),
        ),
        wr.ParallelCoordinatesPlot(
            title="p, threshold, learning rate → validation Dice",
            columns=[
                wr.ParallelCoordinatesPlotColumn(metric=wr.Config("masking.p")),
                wr.ParallelCoordinatesPlotColumn(metric=wr.Config("masking.threshold")),
                wr.ParallelCoordinatesPlotColumn(metric=wr.Config("train.lr"), log=True),
                wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric("val/dice")),
                wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric("test_out/dice")),
            ],
        ),
    ]
    images = [
        wr.MediaBrowser(title="Examples: input, CAM, mask, prediction", media_keys=["examples"]),
        wr.MediaBrowser(title="Centre-classifier CAMs per fold", media_keys=["cams"]),
    ]
    name = f"camsweep {group}"
    workspace = ws.Workspace(
        entity=entity,
        project=project,
        name=name,
        sections=[
            ws.Section(name="Validation", panels=validation, is_open=True),
            ws.Section(name="Generalisation", panels=generalisation, is_open=True),
            ws.Section(name="Images", panels=images, is_open=True),
        ],
        runset_settings=ws.RunsetSettings(
            filters=[ws.Metric("Group") == group], groupby=[ws.Config("model.arch")]
        ),
    )
    return workspace, DashboardPlan(
        name, [_describe(s.name, p) for s in workspace.sections for p in s.panels]
    )


def _key(ref) -> str:
    return ref if isinstance(ref, str) else ref.name


def _describe(section: str, panel) -> tuple[str, str, list[str]]:
    keys: list[str] = []
    for attr in ("x", "groupby"):
        if getattr(panel, attr, None) is not None:
            keys.append(_key(getattr(panel, attr)))
    for attr in ("y", "metrics", "media_keys"):
        keys += [_key(r) for r in getattr(panel, attr, None) or []]
    keys += [_key(c.metric) for c in getattr(panel, "columns", None) or []]
    return section, panel.title or type(panel).__name__, keys


def save_or_describe(entity: str | None, project: str, group: str) -> tuple[DashboardPlan, str]:
    """Saves the workspace when a W&B API key is set; otherwise only describes it."""
    workspace, plan = build_workspace(entity or "<your-entity>", project, group)
    if not os.environ.get("WANDB_API_KEY"):
        return plan, "no WANDB_API_KEY: not saved (this is what would be created)"
    if entity is None:
        import wandb

        workspace.entity = wandb.Api().default_entity
    saved = workspace.save()
    return plan, f"saved: {saved.url}"
