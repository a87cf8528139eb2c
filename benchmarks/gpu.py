"""Training throughput: the paper's setting vs camsweep's fast path, trial packing, TFLOP/s,
the recommended ``resources.per_arch`` and the GPU-hours of a sweep (sweeps/paper-table1.yaml).

Per architecture of the sweep (by default UNet-resnet34, DeepLabV3+-resnet101, SDNet at 256²):
- paper: the sweep's batch size (the paper's 4), fp32, per-sample albumentations DataLoader
  (the CPU data path);
- fast: batch 16 (or the sweep's, if larger), bf16 autocast, channels_last, frames and
  augmentation on the GPU;
- achieved TFLOP/s of the fast training step (torch's FLOP counter) against the device's peak;
- packing: 1, 2 and 4 concurrent trial processes on one device, each the sweep's fast path at
  the sweep's batch size → trial-epochs per device-hour (target ≥ 4× one paper-setting
  trial per GPU) and peak memory per trial;
- the recommended trials per device (fewest within 10 % of the best aggregate that fit in
  memory), printed as a ``resources.per_arch`` line for the sweep spec;
- the device-hours of the whole sweep, one paper-setting trial per device vs packed fast-path
  trials (an upper bound under ASHA, which ends trials early).

The sweep is the paper's grid (sweeps/paper-table1.yaml: 24 trials × 300 epochs per
architecture, batch 4, 256², paper models) unless ``--spec`` names another: its architectures,
trials × epochs per architecture, batch size, image size, model variant and encoder are what
is measured, so the recommended shares fit that sweep. Epochs are of PolypGen-sized folds
(``--frames``, 1537 by default).

Without CUDA a reduced CPU version runs (tiny models, 64 px) so the benchmark cannot rot; its
figures are not GPU figures. It also measures what of a trial's GPU memory needs no GPU to
measure (``memory_per_trial_floor``, the sweep's own models and image size), which bounds how
many trials fit.

    python -m benchmarks.gpu [--seconds 10] [--spec sweeps/my-sweep.yaml] [--frames 1537]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import emit, parameters_m
from search_spaces.grouping import expand_groups
from sweeps.spec import SpecError, load_spec
from trainables.config import load_trial_config
from trainables.data.augment import AugmentConfig, build_train_transform
from trainables.data.dataset import SegmentationDataset
from trainables.data.device_loader import DeviceBatches
from trainables.data.source import prepare_data
from trainables.engine import Runtime, train_one_epoch
from trainables.memory import images_per_epoch
from trainables.memory import memory_floor_gib as trial_memory_floor_gib
from trainables.models import build_model

# Dense bf16 peak of known GPUs (TFLOP/s), for the utilisation figure.
PEAK_BF16 = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
POLYPGEN_FRAMES = 1537  # PolypGen's single frames


@dataclass(frozen=True)
class Net:
    """The model a trial trains."""

    arch: str
    variant: str
    encoder: str | None = None  # smp encoder replacing the variant's (UNet, DeepLabV3+)

    def build(self):
        return build_model(self.arch, variant=self.variant, encoder_name=self.encoder)

    def argv(self) -> list[str]:
        return ["--arch", self.arch, "--variant", self.variant, "--encoder", self.encoder or ""]


@dataclass(frozen=True)
class Sweep:
    """What the packing and device-hour figures are for."""

    name: str
    trial_epochs: dict[str, float]  # per architecture: trials × epochs
    batch: int  # per trial (the paper setting and the packed trials use it)
    image_size: int
    variant: str
    encoder: str | None
    early_stopping: bool  # its scheduler ends trials early: every epoch counted is an upper bound

    def net(self, arch: str, reduced: bool = False) -> Net:
        """The sweep's model of ``arch``; ``reduced``: the tiny one of the CPU version."""
        if reduced:
            return Net(arch, "tiny")
        return Net(arch, self.variant, None if arch == "sdnet" else self.encoder)


# 3 architectures × 6 held-out centres × 4 values of p, 300 epochs, batch 4, 256², paper models.
PAPER_SPEC = Path(__file__).resolve().parents[1] / "sweeps" / "paper-table1.yaml"


def sweep_of_spec(path: str) -> Sweep:
    """A sweep spec's trials × epochs per architecture (an architecture drawn from a choice axis
    counts its expected share); batch size, image size, variant and encoder from its trial
    config (an axis over those is measured at the spec's own value)."""
    spec = load_spec(path, environment=False)  # the data may live on the cluster only
    constants = {a.name: a.values[0] for a in spec.axes if a.form == "constant"}
    arch_axis = next((a for a in spec.axes if a.name == "arch"), None)
    drawn = arch_axis is not None and arch_axis.form == "choice"
    trial_epochs: dict[str, float] = {}
    for group in expand_groups(spec.axes):
        cfg = spec.trial_config({**constants, **group})
        archs = list(arch_axis.values) if drawn else [cfg.model.arch]
        for arch in archs:
            share = spec.search.num_samples * cfg.train.epochs / len(archs)
            trial_epochs[arch] = trial_epochs.get(arch, 0.0) + share
    base = spec.trial_config(constants)
    return Sweep(spec.name, trial_epochs, base.train.batch_size, base.data.image_size,
                 base.model.variant, base.model.encoder_name,
                 early_stopping=spec.scheduler.name != "fifo")  # fmt: skip


def _setup(size: int, cache_dir: str):
    """Synthetic frames, decoded once into ``cache_dir`` (the packed workers reuse it)."""
    cfg = load_trial_config(
        None,
        {
            "data.cache_dir": cache_dir,
            "data.image_size": size,
            "data.synthetic.per_centre": 16,
            "data.synthetic.size": f"{size * 2}x{size * 2}",
        },
    )
    _, data = prepare_data(cfg.data)
    return data


def _rate(net: Net, data, *, batch, amp, on_device, seconds, device) -> tuple[float, float]:
    """(images/s, FLOPs per image of one training step)."""
    model = net.build()
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
        workers = 2 if device.type == "cuda" else 0
        batches = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                             persistent_workers=workers > 0)  # fmt: skip
    # One endless stream for the whole measurement: a fresh iterator per call would restart the
    # DataLoader's workers every few steps and make the paper setting look slower than it is.
    stream = (b for _ in itertools.count() for b in batches)

    def run(steps: int) -> int:
        stats = train_one_epoch(model, itertools.islice(stream, steps), optimizer, runtime)
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
    """One packed trial: the sweep's fast path at the sweep's batch size."""
    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    data = _setup(args.image_size, args.cache_dir)
    net = Net(args.arch, args.variant, args.encoder or None)
    rate, _ = _rate(net, data, batch=args.batch, amp=cuda, on_device=True, seconds=args.seconds,
                    device=device)  # fmt: skip
    row = {"rate": rate, "peak_gib": None, "context_gib": None}
    if cuda:
        free, total = torch.cuda.mem_get_info()
        reserved = torch.cuda.memory_reserved()
        # Device memory in use beyond this process's allocator cache: its CUDA context plus what
        # other processes hold (packed() subtracts the parent's share, for a trial run alone).
        row["peak_gib"] = torch.cuda.max_memory_reserved() / 2**30
        row["context_gib"] = (total - free - reserved) / 2**30
    print(json.dumps(row))


def packed(n: int, args, net: Net, batch: int, held_gib: float) -> tuple[float, float | None]:
    """(aggregate images/s, GiB one trial needs — measured for n = 1 only) of n concurrent trial
    processes on one device; ``held_gib`` is what this process keeps on the device meanwhile."""
    # Each trial gets its share of the cores, as the sweep's trials do (resources.cpu): n
    # processes each spinning on every core would measure oversubscription, not packing.
    threads = max(1, (os.cpu_count() or 1) // n)
    # As a module, like the parent: the workers inherit its working directory and environment,
    # so `benchmarks` imports there as it did here.
    cmd = [sys.executable, "-m", "benchmarks.gpu", "--worker", *net.argv(),
           "--batch", str(batch), "--seconds", str(args.seconds),
           "--image-size", str(args.image_size), "--cache-dir", args.cache_dir,
           "--threads", str(threads)]  # fmt: skip
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(n)]
    outputs = [p.communicate()[0] for p in procs]
    for k, p in enumerate(procs):
        if p.returncode != 0:
            raise RuntimeError(
                f"{net.arch}: packed trial {k + 1} of {n} exited with {p.returncode}"
            )
    rows = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    rate = sum(r["rate"] for r in rows)
    if n > 1 or rows[0]["peak_gib"] is None:
        return rate, None
    # A trial's footprint, read from a trial running alone: its allocator peak plus its CUDA
    # context (device memory in use beyond its cache, less what this process still holds).
    return rate, rows[0]["peak_gib"] + max(0.0, rows[0]["context_gib"] - held_gib)


def _release_device_memory() -> float:
    """Frees this process's cached device memory before the packed trials start; returns what it
    still holds (its CUDA context), in GiB."""
    if not torch.cuda.is_available():
        return 0.0
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**30


def memory_floor_gib(net: Net, size: int, batch: int, frames: int) -> float:
    """Device memory one trial of ``net`` needs at least (see `trainables.memory`, which the
    sweep's preflight shares): a floor, not a peak."""
    return trial_memory_floor_gib(net.build(), size, batch, frames)


def epochs_per_hour(images_per_s: float, frames: int) -> float:
    """Trial-epochs per device-hour of the mean training split."""
    return images_per_s * 3600 / images_per_epoch(frames)


def trials_per_device(aggregate: dict[int, float], peak_gib: float | None,
                      device_gib: float | None) -> int:  # fmt: skip
    """The fewest concurrent trials whose aggregate throughput is within 10 % of the best
    measured, among those whose memory fits in 90 % of the device: more trials per GPU beyond
    that only slow each trial down (and a lost GPU then loses more of them)."""
    fits = {
        n: a
        for n, a in aggregate.items()
        if peak_gib is None or device_gib is None or n * peak_gib <= 0.9 * device_gib
    } or {1: aggregate[1]}
    best = max(fits.values())
    return min(n for n, a in fits.items() if a >= 0.9 * best)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--spec", default=str(PAPER_SPEC), help="the sweep to measure for")
    parser.add_argument("--frames", type=int, default=POLYPGEN_FRAMES, help="dataset frames")
    parser.add_argument("--archs", help="only these (comma-separated; default: the sweep's)")
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--arch", default="unet", help="worker only")
    parser.add_argument("--variant", default="paper", help="worker only")
    parser.add_argument("--encoder", default="", help="worker only")
    parser.add_argument("--batch", type=int, default=4, help="worker only")
    parser.add_argument("--image-size", type=int, default=256, help="worker only")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="worker only")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    try:
        sweep = sweep_of_spec(args.spec)
    except SpecError as exc:
        parser.error(str(exc))
    archs = args.archs.split(",") if args.archs else list(sweep.trial_epochs)
    unknown = sorted(set(archs) - set(sweep.trial_epochs))
    if unknown:
        parser.error(
            f"--archs {','.join(unknown)}: not in the sweep ({', '.join(sweep.trial_epochs)})"
        )
    args.cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="camsweep-gpu-bench-")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    # The reduced CPU version keeps the sweep's batch size but trains tiny models at 64 px.
    args.image_size = sweep.image_size if cuda else 64
    data = _setup(args.image_size, args.cache_dir)
    batch = sweep.batch
    fast_batch = max(batch, 16 if cuda else 8)
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None) if cuda else None
    device_gib = torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else None
    extra = {"sweep": sweep.name, "image_size": args.image_size, "reduced_cpu_version": not cuda}
    hours_paper = hours_fast = 0.0
    per_arch = {}
    for arch in archs:
        net = sweep.net(arch, reduced=not cuda)
        per = {**extra, "variant": net.variant, "encoder": net.encoder,
               "parameters_m": parameters_m(net.build())}  # fmt: skip
        paper, _ = _rate(net, data, batch=batch, amp=False, on_device=False,
                         seconds=args.seconds, device=device)  # fmt: skip
        emit(f"gpu.{arch}.paper_setting", paper, "images/s", batch=batch,
             precision="fp32", data_path="loader", **per)  # fmt: skip
        fast, flops = _rate(net, data, batch=fast_batch, amp=cuda, on_device=True,
                            seconds=args.seconds, device=device)  # fmt: skip
        emit(f"gpu.{arch}.fast_path", fast, "images/s", baseline=paper, batch=fast_batch,
             precision="bf16" if cuda else "fp32", data_path="device", **per)  # fmt: skip
        tflops = fast * flops / 1e12
        emit(f"gpu.{arch}.achieved_tflops", tflops, "TFLOP/s",
             peak=peak, utilisation=round(tflops / peak, 4) if peak else None, **per)  # fmt: skip
        # Packing, as the sweep runs: fast path at the sweep's batch size, n trials per device.
        held_gib = _release_device_memory()
        runs = {n: packed(n, args, net, batch, held_gib) for n in (1, 2, 4)}
        aggregate = {n: r[0] for n, r in runs.items()}
        trial_gib = runs[1][1]
        for n, agg in aggregate.items():
            emit(f"gpu.{arch}.trial_epochs_per_device_hour", epochs_per_hour(agg, args.frames),
                 "trial-epochs/h", baseline=epochs_per_hour(paper, args.frames), target_ratio=4,
                 concurrent_trials=n, batch=batch, **per)  # fmt: skip
        if trial_gib is not None:
            emit(f"gpu.{arch}.memory_per_trial", trial_gib, "GiB", device_gib=device_gib,
                 batch=batch, **per)  # fmt: skip
        else:
            full = sweep.net(arch)
            floor = memory_floor_gib(full, sweep.image_size, batch, args.frames)
            emit(f"gpu.{arch}.memory_per_trial_floor", floor, "GiB", sweep=sweep.name,
                 image_size=sweep.image_size, variant=full.variant, encoder=full.encoder,
                 batch=batch, precision="fp32", frames=args.frames,
                 # Upper bounds: what the floor leaves out only lowers them.
                 trials_per_16gib_at_most=int(0.9 * 16 / floor),
                 trials_per_80gib_at_most=int(0.9 * 80 / floor),
                 excludes="CUDA context, cuDNN workspaces, allocator slack")  # fmt: skip
        n = trials_per_device(aggregate, trial_gib, device_gib)
        per_arch[arch] = round(1 / n, 4)
        emit(f"gpu.{arch}.recommended_trials_per_device", n, "trials",
             resources_gpu=per_arch[arch], **per)  # fmt: skip
        # Device-hours of this architecture's trials (training steps only; validation and tests
        # add a few %): one trial per device at the paper setting, vs n packed fast-path trials.
        images = sweep.trial_epochs[arch] * images_per_epoch(args.frames)
        hours_paper += images / paper / 3600
        hours_fast += images / aggregate[n] / 3600
    # Only the measured architectures' share of the sweep (all of them by default).
    covers = {"archs_covered": list(per_arch), "frames": args.frames,
              "upper_bound": sweep.early_stopping}  # fmt: skip
    emit(f"gpu.{sweep.name}.hours_paper_setting", hours_paper, "device-hours", **covers, **extra)
    emit(f"gpu.{sweep.name}.hours_fast_path", hours_fast, "device-hours", baseline=hours_paper,
         **covers, **extra)  # fmt: skip
    emit("gpu.recommended_resources", len(per_arch), "archs", per_arch_gpu=per_arch, **extra)
    snippet = ", ".join(f"{a}: {{gpu: {g:g}}}" for a, g in per_arch.items())
    print(f"# resources.per_arch from this run: {{{snippet}}}", file=sys.stderr)


if __name__ == "__main__":
    main()
