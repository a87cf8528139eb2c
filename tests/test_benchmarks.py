"""What the benchmarks measure for: benchmarks/gpu.py reads the sweep it sizes GPUs for."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def gpu_bench():
    """benchmarks/gpu.py as a module (a script: it imports its neighbour `common`)."""
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("gpu_bench", BENCHMARKS / "gpu.py")
    module = sys.modules["gpu_bench"] = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("gpu_bench")
        sys.path.remove(str(BENCHMARKS))


def test_the_paper_grid_is_read_from_its_spec(gpu_bench):
    sweep = gpu_bench.sweep_of_spec(gpu_bench.PAPER_SPEC)
    # 6 held-out centres × 4 values of p × 300 epochs per architecture.
    assert sweep.trial_epochs == {"unet": 7200, "deeplabv3plus": 7200, "sdnet": 7200}
    assert (sweep.batch, sweep.image_size, sweep.variant, sweep.early_stopping) == (
        4, 256, "paper", False,
    )  # fmt: skip
    assert sweep.net("unet") == gpu_bench.Net("unet", "paper")  # its default encoder


def test_a_sweeps_own_settings_and_drawn_architectures_are_counted(gpu_bench, tmp_path):
    spec = {
        "name": "mine",
        "data": {"image_size": 128},
        "model": {"variant": "tiny", "encoder_name": "resnet18"},
        "train": {"epochs": 10, "batch_size": 8},
        "space": {
            "arch": {"choice": ["unet", "sdnet"]},
            "held_out_centre": {"grid": [1, 2]},
            "epochs": {"grid": [10, 20]},
        },
        "search": {"algorithm": "random", "num_samples": 3},
        "scheduler": {"name": "asha"},
    }
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(spec))
    sweep = gpu_bench.sweep_of_spec(str(path))
    # 2 centres × (10 + 20) epochs × 3 samples, shared by the two drawn architectures.
    assert sweep.trial_epochs == {"unet": 90, "sdnet": 90}
    assert (sweep.batch, sweep.image_size, sweep.early_stopping) == (8, 128, True)
    assert sweep.net("unet").encoder == "resnet18" and sweep.net("sdnet").encoder is None
    assert sweep.net("unet", reduced=True) == gpu_bench.Net("unet", "tiny")
