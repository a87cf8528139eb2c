"""Masking overhead per training step: no masking vs cached-CAM masking (p = 0.5) vs online CAM.

Same data, model and batches in one run; each variant trains the same number of steps
(data loading, augmentation of the CAM with the image, masking and the step itself included).
The overhead is the median, over interleaved repeats, of each variant's time over the no-masking
time of the same repeat. Target: cached masking adds ≤ 3 % per step.

    python -m benchmarks.step_overhead [--variant tiny] [--image-size 64] [--steps 24] [--repeats 7]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from benchmarks.common import emit, parameters_m
from trainables.classifier import prepare_fold
from trainables.config import load_trial_config
from trainables.data.augment import build_train_transform
from trainables.data.dataset import SegmentationDataset
from trainables.data.source import prepare_data
from trainables.data.splits import leave_one_centre_out
from trainables.engine import Masker, Runtime, train_one_epoch
from trainables.models import build_model

MODES = ("none", "cached", "online")
CAM_MODE = {"none": "cached", "cached": "cached", "online": "online"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", default="tiny", help="tiny (CPU) or paper (GPU)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=24, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_trial_config(
            None,
            {
                "data.cache_dir": tmp,
                "data.image_size": args.image_size,
                "data.synthetic.per_centre": 24,
                "data.synthetic.size": "160x128",
                "classifier.arch": "resnet18",
                "classifier.epochs": 1,
                "train.batch_size": args.batch_size,
                "held_out_centre": 6,
            },
        )
        _, data = prepare_data(cfg.data)
        split = leave_one_centre_out(data.centres, data.patients, 6)
        runtime = Runtime.from_config(cfg.train)
        fold, _ = prepare_fold(data, split, cfg.classifier, runtime, f"{tmp}/folds")
        classifier = fold.load_classifier(runtime.device)
        n = args.steps * args.batch_size
        rows = split.train[:n]
        cams = np.asarray(fold.cams)[:n]
        loaders = {
            mode: DataLoader(
                SegmentationDataset(
                    data,
                    rows,
                    build_train_transform(cfg.train.augment, seed=0),
                    centre_labels=fold.centre_labels,
                    cams=cams if mode == "cached" else None,
                ),
                batch_size=args.batch_size,
            )
            for mode in MODES
        }

        def masker(mode: str) -> Masker:
            masking = cfg.masking.model_copy(
                update={"p": 0.0 if mode == "none" else 0.5, "cam_mode": CAM_MODE[mode]}
            )
            return Masker(
                masking,
                generator=torch.Generator(runtime.device).manual_seed(0),
                classifier=classifier,
            )

        work = cached_masking_work(loaders, masker("cached"), args.steps, args.repeats)
        for arch in ("unet", "deeplabv3plus"):
            model = runtime.prepare_model(build_model(arch, variant=args.variant))
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

            def step_time(mode: str, model=model, optimizer=optimizer) -> float:
                start = time.perf_counter()
                train_one_epoch(model, loaders[mode], optimizer, runtime, masker=masker(mode))
                return (time.perf_counter() - start) / args.steps

            step_time("none")  # warm-up
            # Interleave the variants so drift on a shared machine hits them alike, and compare
            # each variant with the no-masking pass of the same repeat: the median of those
            # paired ratios is the overhead; their range shows how noisy the machine was.
            times = {m: [] for m in MODES}
            for _ in range(args.repeats):
                for mode in times:
                    times[mode].append(step_time(mode))
            base = float(np.median(times["none"]))
            extra = {
                "arch": arch,
                "variant": args.variant,
                "parameters_m": parameters_m(model),
                "image_size": args.image_size,
                "batch": args.batch_size,
                "repeats": args.repeats,
            }
            emit(f"step_overhead.{arch}.no_masking", base * 1000, "ms/step", **extra)
            for mode in ("cached", "online"):
                paired = np.array(times[mode]) / np.array(times["none"])
                emit(
                    f"step_overhead.{arch}.{mode}_cam",
                    np.median(times[mode]) * 1000,
                    "ms/step",
                    baseline=base * 1000,
                    overhead_pct=round(100 * (np.median(paired) - 1), 2),
                    paired_overhead_pct_range=[
                        round(100 * (r - 1), 1) for r in (paired.min(), paired.max())
                    ],
                    **extra,
                )
            # The same overhead from its parts, which a noisy machine blurs far less than whole
            # steps: the work cached masking adds per step, against this architecture's step.
            emit(
                f"step_overhead.{arch}.cached_masking_work",
                work * 1000,
                "ms/step",
                baseline=base * 1000,
                overhead_pct=round(100 * work / base, 2),
                **extra,
            )


def cached_masking_work(loaders, masker: Masker, steps: int, repeats: int) -> float:
    """Seconds per step that cached masking adds: the CAM carried through the augmentations and
    collated (loader with CAMs minus loader without, paired per repeat), plus turning it into
    the mask_factor factor and applying it to the batch."""

    def loader_time(mode: str, passes: int = 5) -> float:
        start = time.perf_counter()
        for _ in range(passes):  # several passes: one is too short to time on a noisy machine
            for _ in loaders[mode]:
                pass
        return (time.perf_counter() - start) / (passes * steps)

    batches = list(loaders["cached"])
    loader_time("cached")  # warm-up
    extra_data, mask_factor = [], []
    for _ in range(repeats):
        extra_data.append(loader_time("cached") - loader_time("none"))
        start = time.perf_counter()
        for batch in batches:
            factor, _ = masker(batch)
            batch["image"] * factor
        mask_factor.append((time.perf_counter() - start) / len(batches))
    return max(0.0, float(np.median(extra_data))) + float(np.median(mask_factor))


if __name__ == "__main__":
    main()
