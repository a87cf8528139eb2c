"""Data path: cached + augment vs reference-style per-item JPEG decode, on full-resolution frames.

The reference decodes the full-size JPEG image and mask for every item (as a plain PyTorch
Dataset over PolypGen files does), resizes to the training size and applies the same
augmentations. camsweep decodes once into the uint8 cache and augments from memory.
Target: ≥ 20× images/s.

    python benchmarks/data_path.py [--frames 36] [--size 1920x1080] [--image-size 256]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from common import emit, rate

from trainables.data.augment import AugmentConfig, build_train_transform
from trainables.data.cache import load_or_build
from trainables.data.dataset import SegmentationDataset
from trainables.data.polypgen import index_polypgen
from trainables.data.synthetic import generate, parse_size


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
    args = parser.parse_args()
    root = Path(args.data)
    if not (root / "synth.json").exists():
        generate(root, per_centre=args.frames, size=parse_size(args.size), seed=0)
    manifest = index_polypgen(root)
    transform = build_train_transform(AugmentConfig(), seed=0)
    s = args.image_size

    def reference_pass() -> int:
        for r in manifest.records:
            reference_item(r, transform, s)
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
    n = len(manifest.records)
    extra = {"frames": n, "source_size": args.size, "image_size": s}
    emit("data_path.reference_decode_augment", ref, "images/s", **extra)
    emit("data_path.cached_augment", fast, "images/s", baseline=ref, target_ratio=20, **extra)
    emit("data_path.cache_build", n / build_s, "images/s", **extra)
    emit("data_path.cache_reload", reload_s * 1000, "ms", **extra)


if __name__ == "__main__":
    main()
