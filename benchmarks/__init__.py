"""camsweep's benchmarks: each module runs as ``python -m benchmarks.<name>`` from the repository
root and prints one JSON line per figure (``benchmarks.common.emit``), also appended to the
results file; ``python -m benchmarks.run`` runs the registered ones, ``python -m
benchmarks.report`` writes the README's tables from the results file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# Before any benchmark imports smp/timm: no retries against a model hub that offline machines
# cannot reach. The package runs before its modules, so this precedes their imports.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclass(frozen=True)
class Benchmark:
    """A registered benchmark: the module ``benchmarks.<name>``."""

    name: str
    compares: str  # one line for the README's "what it compares" table
    # Row fields that tell apart figures emitted under one name (a device, a number of packed
    # trials) or measured with settings that change the figure (image size, CPU vs GPU): the
    # report keeps such rows apart instead of merging them into one range.
    figure_keys: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        return f"{__name__}.{self.name}"


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(
        "data_path",
        "cached + augment vs per-item full-size JPEG decode + the same augmentation (1920×1080 "
        "synthetic frames)",
        figure_keys=("device", "source_size", "image_size", "batch_size"),
    ),
    Benchmark(
        "step_overhead",
        "training step with no masking vs cached-CAM masking (p = 0.5) vs online GradCAM (median "
        "of paired, interleaved repeats), and the work cached masking adds, measured from its "
        "parts",
        figure_keys=("variant", "parameters_m", "image_size", "batch"),
    ),
    Benchmark(
        "cam_quality",
        "a spec's centre classifier (default the demo's), per held-out fold on its training "
        "centres: CAM energy on the synthetic overlays vs the overlays' area share (chance; goal "
        "≥ 3×), overlay and polyp pixels masked (goal < 10 %)",
        figure_keys=(
            "spec",
            "held_out",
            "image_size",
            "classifier_epochs",
            "cam_layer",
            "overrides",
        ),
    ),
    Benchmark(
        "sweep_overhead",
        "demo sweep: time to first result, fold preparation, share of wall time outside training "
        "steps",
        figure_keys=("spec",),
    ),
    Benchmark(
        "gpu",
        "per architecture of a sweep — `paper-table1.yaml`, or your own with `--spec` (its "
        "architectures, trials × epochs, batch size, image size, variant, encoder): paper setting "
        "(the sweep's batch size, the paper's 4; fp32; CPU loader) vs fast path (batch 16, bf16, "
        "on-GPU data); TFLOP/s against the device's peak; 1/2/4 packed trials per GPU at the "
        "sweep's batch size (trial-epochs per GPU-hour, peak memory per trial) → the recommended "
        "`resources.per_arch` shares; the sweep's GPU-hours. Without CUDA: each trial's "
        "GPU-memory floor, and a reduced CPU version of the rest",
        figure_keys=(
            "sweep",
            "reduced_cpu_version",
            "parameters_m",
            "image_size",
            "concurrent_trials",
        ),
    ),
    Benchmark(
        "predict_throughput",
        "`camsweep predict` (batched, threaded decode) vs a plain per-image loop over the same "
        "frames, for one fold and the five-fold ensemble (untrained models, synthetic JPEGs)",
        figure_keys=("members", "arch", "variant", "image_size", "frame_size", "device"),
    ),
    Benchmark(
        "method_effect",
        "a reduced synthetic Table 1 run as a sweep: per held-out centre, UNet's "
        "out-of-distribution Dice at p = 0.5 vs p = 0 over seeds, with the paired bootstrap 95 % "
        "CI of the difference",
        figure_keys=(
            "image_size",
            "epochs",
            "classifier_epochs",
            "cam_layer",
            "seeds",
            "data",
            "variant",
        ),
    ),
)


def benchmark(name: str) -> Benchmark:
    """The registered benchmark called ``name``; KeyError names the registered ones."""
    for b in BENCHMARKS:
        if b.name == name:
            return b
    raise KeyError(f"no benchmark {name!r} (registered: {', '.join(b.name for b in BENCHMARKS)})")
