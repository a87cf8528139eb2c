"""Shared test setup: offline, quiet, small — and one synthetic dataset for the whole run."""

from __future__ import annotations

import os

# Before anything imports smp/timm/wandb: no hub retries, no W&B network, no stray files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# The tests share one Ray (`local_ray`). Ray keeps at most num_cpus (2) workers and ends idle ones
# beyond that within a second, so while a sweep's two trial actors run, the workers that prepared
# its folds are ended, and every sweep's fold preparation paid a fresh import of torch & co
# (~5 s). A few more kept workers let the next test's fold preparations reuse them.
os.environ.setdefault("RAY_num_workers_soft_limit", "6")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

SYNTH_SIZE = (64, 64)
SYNTH_PER_CENTRE = 16


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A six-centre synthetic PolypGen tree at 64×64, shared read-only by the whole run."""
    from trainables.data.synthetic import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, per_centre=SYNTH_PER_CENTRE, size=SYNTH_SIZE, seed=0)
    return root


@pytest.fixture(scope="session")
def synth_decoded(synth_root, tmp_path_factory):
    """The synthetic tree decoded at 32 px, shared read-only by the tests that train tiny trials."""
    from trainables.data.cache import load_or_build
    from trainables.data.polypgen import index_polypgen

    decoded, _ = load_or_build(index_polypgen(synth_root), 32, tmp_path_factory.mktemp("cache"))
    return decoded


def write_frame(root: Path, centre: int, stem: str, size=(32, 32), mask_size=None, polyp=True):
    """Writes one hand-made PolypGen frame (image + mask) for error-case tests."""
    images = root / f"data_C{centre}" / f"images_C{centre}"
    masks = root / f"data_C{centre}" / f"masks_C{centre}"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    w, h = size
    rgb = np.full((h, w, 3), (200, 90, 80), np.uint8)
    Image.fromarray(rgb).save(images / f"{stem}.jpg")
    mw, mh = mask_size or size
    mask = np.zeros((mh, mw), np.uint8)
    if polyp:
        mask[mh // 4 : mh // 2, mw // 4 : mw // 2] = 255
    Image.fromarray(mask).save(masks / f"{stem}_mask.jpg")
    return images / f"{stem}.jpg", masks / f"{stem}_mask.jpg"


def tiny_spec(tmp_path: Path, **changes) -> dict:
    """A tiny sweep (4 trials, 1 epoch, 32 px) storing its results under ``tmp_path``. Its
    synthetic dataset is generated and decoded once per test run, in a shared cache."""
    raw = {
        "name": "tiny",
        "data": {
            "image_size": 32,
            "cache_dir": str(_shared_data_cache()),
            "synthetic": {"per_centre": 16, "size": "64x64"},
        },
        "model": {"variant": "tiny"},
        "classifier": {"arch": "resnet18", "epochs": 1, "batch_size": 8},
        "train": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "device": "cpu"},
        "space": {
            "arch": {"grid": ["unet"]},
            "held_out_centre": {"grid": [2, 6]},
            "p": {"grid": [0.0, 0.5]},
        },
        "resources": {"cpu": 1, "gpu": 0},
        "tracking": {"wandb": {"mode": "disabled"}},
        "storage": {"path": str(tmp_path / "results")},
    }
    raw.update(changes)
    return raw


STRAIGHT_EPOCHS = 3


@pytest.fixture(scope="session")
def straight_run(tmp_path_factory) -> tuple[Path, dict, Path]:
    """The tiny sweep (3 epochs) run to completion, uninterrupted: checked by the smoke test, the
    yardstick of the interrupted and the retried ones, and the run the model export is tested
    on. Returns (storage root, raw spec, run folder). Tests that export it write to their own
    folders."""
    from sweeps.launch import init_ray, run_sweep
    from sweeps.spec import RayConfig, load_spec

    init_ray(RayConfig(num_cpus=2, object_store_mb=256), address=None)  # as `local_ray`
    root = tmp_path_factory.mktemp("straight")
    raw = tiny_spec(root)
    raw["train"]["epochs"] = STRAIGHT_EPOCHS
    return root, raw, run_sweep(load_spec("tiny.yaml", raw=raw, local_gpus=0))


def reuse_straight_folds(straight_run, storage: Path) -> None:
    """Puts the straight run's fold cache (classifiers and CAMs of tiny_spec's C2 and C6) into
    ``storage``, as a second sweep on one storage finds them: a sweep started in a fresh process
    then reads them instead of training them in fresh Ray workers."""
    import shutil

    shutil.copytree(
        straight_run[0] / "results" / "folds",
        storage / "folds",
        ignore=shutil.ignore_patterns(".*"),  # the lock files
    )


_SHARED: dict[str, Path] = {}


def _shared_data_cache() -> Path:
    # Content-addressed (synthetic/<args digest>, decoded/<manifest key>): safe to share.
    if "cache" not in _SHARED:
        import tempfile

        _SHARED["cache"] = Path(tempfile.mkdtemp(prefix="camsweep-test-data-"))
    return _SHARED["cache"]


@pytest.fixture
def local_ray():
    """The small local Ray shared by every test that needs one (started on first use)."""
    import ray

    from sweeps.launch import init_ray
    from sweeps.spec import RayConfig

    # Started the way `camsweep run` starts it (loopback only), so the tests run on that Ray.
    init_ray(RayConfig(num_cpus=2, object_store_mb=256), address=None)
    yield ray


def pytest_collection_modifyitems(config, items):
    """`gpu` tests need CUDA: skipped, saying so, on a machine without it."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="gpu test: CUDA is not available on this machine")
        for item in gpu_tests:
            item.add_marker(skip)


def pytest_sessionfinish(session, exitstatus):
    import shutil
    import sys

    if "cache" in _SHARED:
        shutil.rmtree(_SHARED["cache"], ignore_errors=True)

    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
