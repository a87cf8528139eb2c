"""CAM quality of a sweep spec's centre classifier (default: the demo's), per fold and centre:
the share of CAM energy on overlay pixels beside the overlay's own area share (chance), the
shares of overlay and of polyp pixels the masking removes. Goals (issue 15): on the training
centres, energy ≥ 3× chance and polyp pixels masked < 10 %.

    python -m benchmarks.cam_quality [--spec sweeps/demo.yaml] [--image-size 256] [--held-out 6]
        [--set masking.cam_layer=layer4 --set classifier.epochs=4 ...]

It prepares each of the spec's held-out folds exactly as a sweep does (same data, classifier,
CAM choice and fold split), on the spec's data — the demo's synthetic tree is written first
when it is missing — and writes each fold's CAM figure under ``--figures``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import yaml

from benchmarks.common import emit, with_demo_tree
from sweeps.spec import load_spec, read_spec_yaml
from trainables.cam_report import cam_report, format_scores, training_centre_means
from trainables.config import set_by_path
from trainables.data.source import fold_split, prepare_data
from trainables.engine import Runtime
from trainables.trial import prepare_trial_fold

ENERGY_GOAL = 3.0  # CAM energy on overlays, as a multiple of the overlay's area share
POLYP_GOAL = 0.10  # largest share of polyp pixels masked


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", default="sweeps/demo.yaml")
    parser.add_argument("--image-size", type=int, help="instead of the spec's data.image_size")
    parser.add_argument("--held-out", type=int, nargs="*", help="only these of the spec's folds")
    parser.add_argument("--figures", default="bench-data", help="folder for the CAM figures")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a spec key, e.g. "
        "masking.cam_layer=layer4 (the value is read as YAML)"
    )  # fmt: skip
    args = parser.parse_args()
    raw = read_spec_yaml(args.spec)
    with tempfile.TemporaryDirectory() as tmp:
        with_demo_tree(raw, Path(tmp) / "demo-data")
        if args.image_size:
            raw["data"]["image_size"] = args.image_size
        for item in args.set:
            _set(raw, item)
        raw["data"]["cache_dir"] = str(Path(tmp) / "cache")
        spec = load_spec(args.spec, raw=raw, local_gpus=0)
        for centre in args.held_out or spec.held_out_centres():
            _fold(spec, centre, Path(tmp) / "folds", Path(args.figures), args.set)


def _set(raw: dict, item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep:
        raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
    set_by_path(raw, key, yaml.safe_load(value))


def _fold(spec, centre: int, cache: Path, figures: Path, overrides: list[str]) -> None:
    # The masked arm's trial config: the one that needs the fold's classifier and CAMs.
    p = max(spec.values_of("p", spec.masking.p))
    cfg = spec.trial_config({"held_out_centre": centre, "p": p})
    _, data = prepare_data(cfg.data)
    split = fold_split(data, cfg.data, centre)
    runtime = Runtime.from_config(cfg.train)
    fold, _ = prepare_trial_fold(cfg, data, split, cache, runtime)
    size = cfg.data.image_size
    png = figures / f"cam_quality-{spec.name}-{size}px-C{centre}.png"
    masking = cfg.masking
    scores, _ = cam_report(
        data, split, fold, runtime, png, threshold=masking.threshold, mode=masking.mode
    )
    print(f"held-out C{centre}, {size} px, CAM {masking.cam}, threshold {masking.threshold}:")
    print(format_scores(scores, centre))
    print(f"figure: {png}")
    extra = {
        "spec": spec.name,
        "held_out": centre,
        "image_size": size,
        "classifier": cfg.classifier.arch,
        "classifier_epochs": cfg.classifier.epochs,
        "cam_layer": masking.cam_layer,
        "attribution": masking.attribution,
        "threshold": masking.threshold,
    }
    if overrides:  # a figure of another setting than the spec's: kept apart in the tables
        extra["overrides"] = " ".join(overrides)
    for key in ("train_accuracy", "val_accuracy"):
        if key in fold.metrics:
            emit(f"cam_quality.classifier_{key}", fold.metrics[key], "fraction", **extra)
    means = training_centre_means(scores, centre)
    ratio = means["energy_on_overlay"] / means["overlay_area"]
    emit("cam_quality.energy_over_chance", ratio, "x", goal=ENERGY_GOAL, **extra)
    emit("cam_quality.polyp_masked", means["polyp_masked"], "fraction", goal=POLYP_GOAL, **extra)
    for name in ("energy_on_overlay", "overlay_area", "overlay_masked", "precision", "iou"):
        emit(f"cam_quality.{name}", means[name], "fraction", **extra)


if __name__ == "__main__":
    main()
