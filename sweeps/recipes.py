"""The paper's recipe as data: every setting the paper's text states, so that each exported
number can say where its sweep departs from it (see the README's fidelity table)."""

from __future__ import annotations

from typing import Any

from sweeps.spec import SweepSpec

# Dotted trial-config key → the value the paper's text gives (Corbetta et al., MLMI 2023).
PAPER: dict[str, Any] = {
    "data.image_size": 256,
    "model.variant": "paper",
    "classifier.arch": "resnet50",
    "classifier.weights": "imagenet",
    "classifier.epochs": 10,
    "masking.threshold": 0.5,
    "masking.mode": "occlude",
    "masking.draw": "per_sample",
    "masking.attribution": "gradcam",
    "masking.cam_input": "sobel",
    "train.epochs": 300,
    "train.batch_size": 4,
    "train.lr": 1e-5,
    "train.augment.rotate_p": 0.5,
    "train.augment.hflip_p": 0.5,
    "train.augment.vflip_p": 0.5,
    "train.augment.color_jitter_p": 0.3,
}


def _get(tree: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def paper_departures(spec: SweepSpec) -> list[str]:
    """``key value (paper: value)`` for each stated setting the sweep does not share with the
    paper; swept axes are left out (their values are in the tables)."""
    constants = {a.name: a.values[0] for a in spec.axes if a.form == "constant"}
    shared = spec.trial_config(constants).to_dict()  # what every trial of the sweep shares
    swept = {a.key for a in spec.axes if a.form != "constant"}
    out = []
    for key, paper in PAPER.items():
        if key in swept:
            continue
        value = _get(shared, key)
        if value != paper:
            out.append(f"{key} {value} (paper: {paper})")
    return out


def recipe_note(spec: SweepSpec) -> str:
    """One sentence for tables and captions: the spec and how it departs from the paper."""
    departures = paper_departures(spec)
    if not departures:
        return f"Recipe: spec {spec.name}, the paper's stated settings throughout."
    return (
        f"Recipe: spec {spec.name}; departs from the paper's text in " + "; ".join(departures) + "."
    )
