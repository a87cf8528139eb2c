"""Data path: cached + augment vs reference-style per-item JPEG decode, on full-resolution frames.

The reference decodes the full-size JPEG image and mask for every item (as a plain PyTorch
Dataset over PolypGen files does), resizes to the training size and applies the same
augmentations. camsweep decodes once into the uint8 cache and augments from memory.
Target: ≥ 20× images/s.

`batched_augment` is the device-resident fast path (DeviceBatches + BatchAugment): the cache
uploaded once, batches gathered and augmented with tensor ops — on the CPU, and on CUDA when
available. Its ratio is against the reference; `ratio_vs_cached_augment` compares it with the
per-item albumentations path.

    python -m benchmarks.data_path [--frames 6] [--size 1920x1080] [--image-size 256] \
        [--batch-size 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch

from benchmarks.common import emit, rate
from trainables.data.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentConfig,
    build_train_transform,
)
from trainables.data.cache import load_or_build
from trainables.data.dataset import SegmentationDataset
from trainables.data.device_loader import DeviceBatches
from trainables.data.polypgen import index_polypgen
from trainables.data.synthetic import generate, parse_size


def reference_transform(cfg: AugmentConfig) -> A.Compose:
    """A plain per-item pipeline: the same augmentations, then albumentations' Normalize."""
    normalize = A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD, max_pixel_value=255.0)
    return A.Compose([*build_train_transform(cfg).transforms, normalize], seed=0)


def reference_item(record, transform, size: int) -> dict:
    image = cv2.cvtColor(cv2.imread(str(record.image)), cv2.COLOR_BGR2RGB)
    mask = cv2.imread(str(record.mask), cv2.IMREAD_GRAYSCALE)
    image = cv2.resize(image, (size, size))
    mask = (cv2.resize(mask, (size, size)) >= 128).astype(np.uint8)
    out = transform(image=image, mask=mask)
    return {
        "image": torch.from_numpy(out["image"].transpose(2, 0, 1).copy()),
        "mask": torch.from_numpy(out["mask"].astype(np.float32))[None],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=6, help="frames per centre (6 centres)")
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--data", default="bench-data/fullres", help="reused between runs")
    parser.add_argument("--batch-size", type=int, default=4, help="batched path (paper: 4)")
    args = parser.parse_args()
    root = Path(args.data)
    if not (root / "synth.json").exists():
        generate(root, per_centre=args.frames, size=parse_size(args.size), seed=0)
    manifest = index_polypgen(root)
    transform = build_train_transform(AugmentConfig(), seed=0)
    s = args.image_size

    reference = reference_transform(AugmentConfig())

    def reference_pass() -> int:
        for r in manifest.records:
            reference_item(r, reference, s)
        return len(manifest.records)

    with tempfile.TemporaryDirectory() as cache_dir:
        t0 = time.perf_counter()
        data, _ = load_or_build(manifest, s, cache_dir)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        data, hit = load_or_build(manifest, s, cache_dir)
        reload_s = time.perf_counter() - t0
        assert hit
        dataset = SegmentationDataset(data, np.arange(len(data)), transform)

        def cached_pass() -> int:
            for i in range(len(dataset)):
                dataset[i]
            return len(dataset)

        ref = rate(reference_pass)
        fast = rate(cached_pass)
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        batched = {d: batched_rate(data, d, args.batch_size) for d in devices}
    n = len(manifest.records)
    extra = {"frames": n, "source_size": args.size, "image_size": s}
    emit("data_path.reference_decode_augment", ref, "images/s", **extra)
    emit("data_path.cached_augment", fast, "images/s", baseline=ref, target_ratio=20, **extra)
    for device, value in batched.items():
        emit(
            "data_path.batched_augment",
            value,
            "images/s",
            baseline=ref,
            ratio_vs_cached_augment=round(value / fast, 4),
            device=device,
            batch_size=args.batch_size,
            **extra,
        )
    emit("data_path.cache_build", n / build_s, "images/s", **extra)
    emit("data_path.cache_reload", reload_s * 1000, "ms", **extra)


def batched_rate(data, device: str, batch_size: int) -> float:
    """images/s of DeviceBatches with the training augmentations (upload excluded, as the cache
    build is excluded from cached_augment)."""
    loader = DeviceBatches(
        data,
        np.arange(len(data)),
        batch_size=batch_size,
        augment=AugmentConfig(),
        shuffle=True,
        device=device,
    )

    def batched_pass() -> int:
        for _ in loader:
            pass
        if device == "cuda":
            torch.cuda.synchronize()  # batches are queued asynchronously: count finished work
        return loader.num_frames

    batched_pass()  # warm-up: kernels, per-device constants
    return rate(batched_pass)


if __name__ == "__main__":
    main()
