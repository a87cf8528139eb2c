"""Training throughput: the paper's setting vs camsweep's fast path, trial packing, TFLOP/s, and
the GPU-hours of sweeps/paper-table1.yaml.

- paper: batch 4, fp32, per-sample albumentations DataLoader (the CPU data path);
- fast: larger batch, bf16 autocast, channels_last, frames and augmentation on the GPU;
- packing: 1, 2 and 4 concurrent trial processes on one device → trial-epochs per GPU-hour;
- achieved TFLOP/s of the training step (torch's FLOP counter) against the device's peak.

On a CUDA machine: UNet-resnet34 and DeepLabV3+-resnet101 at 256². Without CUDA a reduced CPU
version runs (tiny models, 64 px) so the benchmark cannot rot; its figures are not GPU figures.

    python benchmarks/gpu.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from common import emit
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from trainables.config import load_trial_config
from trainables.data.augment import AugmentConfig, build_train_transform
from trainables.data.dataset import SegmentationDataset
from trainables.data.device_loader import DeviceBatches
from trainables.data.source import prepare_data
from trainables.engine import Runtime, train_one_epoch
from trainables.models import build_model

# Dense bf16 peak of known GPUs (TFLOP/s), for the utilisation figure.
PEAK_BF16 = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
PAPER_TRIALS, PAPER_EPOCHS = 72, 300
# Mean training-split size over the six folds: 80 % of the other centres' 1537 - 1537/6 frames.
PAPER_IMAGES_PER_EPOCH = 0.8 * (1537 - 1537 / 6)


def _setup(cuda: bool):
    size = 256 if cuda else 64
    tmp = tempfile.mkdtemp()
    cfg = load_trial_config(
        None,
        {
            "data.cache_dir": tmp,
            "data.image_size": size,
            "data.synthetic.per_centre": 16,
            "data.synthetic.size": f"{size * 2}x{size * 2}",
        },
    )
    _, data = prepare_data(cfg.data)
    return data, size


def _rate(arch, variant, data, *, batch, amp, on_device, seconds, device) -> tuple[float, float]:
    """(images/s, FLOPs per image of one training step)."""
    model = build_model(arch, variant=variant)
    runtime = Runtime(device, amp=amp, channels_last=device.type == "cuda")
    model = runtime.prepare_model(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    rows = np.arange(len(data))
    if on_device:
        batches = DeviceBatches(
            data, rows, batch_size=batch, augment=AugmentConfig(), shuffle=True, device=device
        )
    else:
        ds = SegmentationDataset(data, rows, build_train_transform(AugmentConfig(), seed=0))
        batches = DataLoader(
            ds, batch_size=batch, shuffle=True, num_workers=2 if device.type == "cuda" else 0
        )

    def run(steps: int) -> int:
        stream = itertools.islice(itertools.cycle(batches), steps)
        stats = train_one_epoch(model, stream, optimizer, runtime)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return stats.images

    run(3)  # warm-up: cudnn autotune, allocator, first batches
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        images += run(5)
    rate = images / (time.perf_counter() - start)
    # Two images: BatchNorm in train mode (DeepLabV3+'s ASPP pooling) rejects a batch of one.
    x = next(iter(batches))["image"][:2].to(device)
    with FlopCounterMode(display=False) as counter, runtime.autocast():
        model(x)["logits"].float().sum().backward()
    return rate, counter.get_total_flops() / len(x)


def worker(args) -> None:
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    data, _ = _setup(cuda)
    rate, _ = _rate(args.arch, args.variant, data, batch=args.batch, amp=cuda, on_device=True,
                    seconds=args.seconds, device=device)  # fmt: skip
    print(json.dumps({"rate": rate}))


def packed(n: int, args, arch: str, variant: str, batch: int) -> float:
    """Aggregate images/s of n concurrent trial processes on one device."""
    cmd = [sys.executable, __file__, "--worker", "--arch", arch, "--variant", variant,
           "--batch", str(batch), "--seconds", str(args.seconds)]  # fmt: skip
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(n)]
    return sum(json.loads(p.communicate()[0].strip().splitlines()[-1])["rate"] for p in procs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--arch", default="unet")
    parser.add_argument("--variant", default="paper")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    data, size = _setup(cuda)
    variant = "paper" if cuda else "tiny"
    fast_batch = 16 if cuda else 8
    peak = next(
        (v for k, v in PEAK_BF16.items() if cuda and k in torch.cuda.get_device_name()), None
    )
    extra = {"image_size": size, "variant": variant, "reduced_cpu_version": not cuda}
    rates = {}
    for arch in ("unet", "deeplabv3plus"):
        paper, _ = _rate(
            arch,
            variant,
            data,
            batch=4,
            amp=False,
            on_device=False,
            seconds=args.seconds,
            device=device,
        )
        fast, flops = _rate(
            arch,
            variant,
            data,
            batch=fast_batch,
            amp=cuda,
            on_device=True,
            seconds=args.seconds,
            device=device,
        )
        rates[arch] = (paper, fast)
        emit(
            f"gpu.{arch}.paper_setting",
            paper,
            "images/s",
            batch=4,
            precision="fp32",
            data_path="loader",
            **extra,
        )
        emit(f"gpu.{arch}.fast_path", fast, "images/s", baseline=paper, batch=fast_batch,
             precision="bf16" if cuda else "fp32", data_path="device", **extra)  # fmt: skip
        tflops = fast * flops / 1e12
        emit(f"gpu.{arch}.achieved_tflops", tflops, "TFLOP/s",
             peak=peak, utilisation=round(tflops / peak, 4) if peak else None, **extra)  # fmt: skip
    # Trial packing: trial-epochs per device-hour with 1, 2, 4 concurrent trials.
    aggregate = {n: packed(n, args, "unet", variant, fast_batch) for n in (1, 2, 4)}
    for n, agg in aggregate.items():
        emit("gpu.unet.trial_epochs_per_device_hour", agg * 3600 / PAPER_IMAGES_PER_EPOCH,
             "trial-epochs/h", baseline=rates["unet"][0] * 3600 / PAPER_IMAGES_PER_EPOCH,
             concurrent_trials=n, **extra)  # fmt: skip
    packing_gain = max(aggregate.values()) / aggregate[1]
    # Device-hours of the paper grid (training steps only; validation and tests add a few %).
    images = PAPER_TRIALS * PAPER_EPOCHS * PAPER_IMAGES_PER_EPOCH
    paper_hours = images / np.mean([r[0] for r in rates.values()]) / 3600
    fast_hours = images / (np.mean([r[1] for r in rates.values()]) * packing_gain) / 3600
    emit("gpu.paper_table1.hours_paper_setting", paper_hours, "device-hours", **extra)
    emit("gpu.paper_table1.hours_fast_path", fast_hours, "device-hours", baseline=paper_hours,
         packing_gain=round(packing_gain, 3), **extra)  # fmt: skip


if __name__ == "__main__":
    main()
