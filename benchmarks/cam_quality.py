"""CAM quality: train the centre classifier on a synthetic fold and score its binarised GradCAM
against the overlay ground truth (precision and IoU per centre). Goal: precision ≥ 0.8, IoU ≥ 0.5.

    python -m benchmarks.cam_quality [--image-size 128] [--per-centre 40] [--epochs 8]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import emit
from trainables.cam_report import cam_report, format_scores
from trainables.classifier import prepare_fold
from trainables.config import load_trial_config
from trainables.data.source import prepare_data
from trainables.data.splits import leave_one_centre_out
from trainables.engine import Runtime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--per-centre", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--held-out", type=int, default=6)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--figure", default="bench-data/cam_quality.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_trial_config(
            None,
            {
                "held_out_centre": args.held_out,
                "data.cache_dir": tmp,
                "data.image_size": args.image_size,
                "data.synthetic.per_centre": args.per_centre,
                "data.synthetic.size": "320x256",
                "classifier.arch": args.arch,
                "classifier.epochs": args.epochs,
                "classifier.lr": args.lr,
                "masking.threshold": args.threshold,
            },
        )
        _, data = prepare_data(cfg.data)
        split = leave_one_centre_out(data.centres, data.patients, args.held_out)
        runtime = Runtime.from_config(cfg.train)
        fold, _ = prepare_fold(data, split, cfg.classifier, runtime, Path(tmp) / "folds")
        scores, _ = cam_report(
            data, split, fold, runtime, Path(args.figure), threshold=args.threshold
        )
    print(format_scores(scores, args.held_out))
    extra = {
        "arch": args.arch,
        "image_size": args.image_size,
        "epochs": args.epochs,
        "threshold": args.threshold,
    }
    for key, value in fold.metrics.items():
        if "accuracy" in key:
            emit(f"cam_quality.classifier_{key}", value, "fraction", **extra)
    seen = [s for s in scores if s.centre != args.held_out]
    emit(
        "cam_quality.precision_training_centres",
        float(np.mean([s.precision for s in seen])),
        "fraction",
        goal=0.8,
        **extra,
    )
    emit(
        "cam_quality.iou_training_centres",
        float(np.mean([s.iou for s in seen])),
        "fraction",
        goal=0.5,
        **extra,
    )
    for s in scores:
        emit(
            f"cam_quality.C{s.centre}.precision",
            s.precision,
            "fraction",
            held_out=s.centre == args.held_out,
            **extra,
        )
        emit(
            f"cam_quality.C{s.centre}.iou",
            s.iou,
            "fraction",
            held_out=s.centre == args.held_out,
            **extra,
        )


if __name__ == "__main__":
    main()
