"""Shared caches under concurrency and damage: the decoded dataset and the fold cache are built
once by concurrent sweeps, and a damaged entry is reported in one line and rebuilt."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from trainables.cache_folder import CHECKSUMS_FILE

# Both processes import first, say they are ready, then start together when `go` appears.
RACER = """
import json, sys, time
from pathlib import Path
from trainables.config import load_trial_config
from trainables.data.cache import load_or_build
from trainables.data.source import fold_split, index_data
from trainables.trial import prepare_trial_fold

cache, ready, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
cfg = load_trial_config(None, {
    "data.cache_dir": str(cache), "data.image_size": 32,
    "data.synthetic.per_centre": 16, "data.synthetic.size": "64x64",
    "classifier.arch": "resnet18", "classifier.epochs": 1, "classifier.batch_size": 8,
    "train.device": "cpu", "held_out_centre": 6,
})
ready.touch()
while not go.exists():
    time.sleep(0.005)
data, decoded_reused = load_or_build(index_data(cfg.data), 32, cache / "decoded")
split = fold_split(data, cfg.data, 6)
fold, fold_reused = prepare_trial_fold(cfg, data, split, cache / "folds")
print(json.dumps({"decoded": decoded_reused, "fold": fold_reused, "fold_path": str(fold.path)}))
"""


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_two_sweeps_starting_together_decode_and_prepare_the_fold_once(tmp_path):
    cache, go = tmp_path / "cache", tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(2)]
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(cache), str(r), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in ready
    ]
    deadline = time.monotonic() + 120
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()
    outputs = []
    for racer in racers:
        out, err = racer.communicate(timeout=300)
        assert racer.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    # One of them built each entry; the other waited for it and reused it.
    assert sorted(o["decoded"] for o in outputs) == [False, True], outputs
    assert sorted(o["fold"] for o in outputs) == [False, True], outputs
    assert outputs[0]["fold_path"] == outputs[1]["fold_path"]
    # One entry each, sealed, and no temp folder left behind.
    for folder in (cache / "decoded", cache / "folds"):
        (entry,) = _entries(folder)
        assert (folder / entry / CHECKSUMS_FILE).exists()


def _damage(kind: str, path: Path) -> None:
    if kind == "truncated":
        with path.open("r+b") as fh:
            fh.truncate(path.stat().st_size // 2)
    else:  # one byte altered, the size unchanged
        raw = bytearray(path.read_bytes())
        raw[-1] ^= 0xFF
        path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "file, kind",
    [("images.npy", "truncated"), ("masks.npy", "altered"), (CHECKSUMS_FILE, "missing")],
)
def test_a_damaged_decoded_cache_is_reported_in_one_line_and_rebuilt(
    synth_root, tmp_path, caplog, file, kind
):
    from trainables.data.cache import load_or_build
    from trainables.data.polypgen import index_polypgen

    manifest = index_polypgen(synth_root)
    first, reused = load_or_build(manifest, 32, tmp_path)
    assert not reused
    images, masks = np.array(first.images), np.array(first.masks)
    (entry,) = _entries(tmp_path)
    target = tmp_path / entry / file
    target.unlink() if kind == "missing" else _damage(kind, target)
    with caplog.at_level(logging.WARNING, logger="camsweep.cache"):
        again, reused = load_or_build(manifest, 32, tmp_path)
    assert not reused  # rebuilt, not used
    (record,) = caplog.records
    message = record.getMessage()
    assert message.startswith(f"decoded cache {tmp_path / entry}: ") and file in message
    assert message.endswith("— rebuilding it") and "\n" not in message
    np.testing.assert_array_equal(again.images, images)
    np.testing.assert_array_equal(again.masks, masks)
    assert load_or_build(manifest, 32, tmp_path)[1]  # and sound again


def test_a_damaged_fold_cache_is_reported_and_rebuilt_never_used(synth_decoded, tmp_path, caplog):
    from trainables.classifier import prepare_fold
    from trainables.config import load_trial_config
    from trainables.data.splits import leave_one_centre_out
    from trainables.engine import Runtime

    cfg = load_trial_config(
        None, {"classifier.arch": "resnet18", "classifier.epochs": 1, "classifier.batch_size": 8}
    )
    split = leave_one_centre_out(synth_decoded.centres, synth_decoded.patients, 6)
    runtime = Runtime.from_config(cfg.train)

    def prepare():
        return prepare_fold(synth_decoded, split, cfg.classifier, runtime, tmp_path)

    fold, reused = prepare()
    assert not reused
    cams = np.array(fold.cams)
    for name, kind in (("cams.npy", "altered"), ("classifier.pt", "truncated")):
        _damage(kind, fold.path / name)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="camsweep.cache"):
            fold, reused = prepare()
        assert not reused
        (record,) = caplog.records
        assert f"fold cache C6 {fold.path}: {name} is truncated or altered" in record.getMessage()
        np.testing.assert_array_equal(fold.cams, cams)  # seeded: the same artefacts again
        fold.load_classifier()  # loads
    shutil.rmtree(fold.path)
    assert not prepare()[1]  # a vanished entry is simply rebuilt


def test_the_driver_reads_a_whole_cached_fold_and_leaves_any_other_to_the_fold_task(
    synth_decoded, tmp_path
):
    from trainables.config import load_trial_config
    from trainables.data.source import fold_split
    from trainables.fold_task import cached_trial_fold
    from trainables.trial import prepare_trial_fold

    keys = {"classifier.arch": "resnet18", "classifier.epochs": 1, "classifier.batch_size": 8}
    cfg = load_trial_config(None, {**keys, "held_out_centre": 6})

    def cached(cfg):
        return cached_trial_fold(synth_decoded, cfg, tmp_path)

    assert cached(cfg) is None  # nothing cached yet: the fold task trains it
    fold, _ = prepare_trial_fold(
        cfg, synth_decoded, fold_split(synth_decoded, cfg.data, 6), tmp_path
    )
    found = cached(cfg)
    assert found.path == fold.path and found.cams.flags.c_contiguous  # ready for the object store
    np.testing.assert_array_equal(found.cams, fold.cams)
    assert (
        cached(load_trial_config(None, {**keys, "classifier.epochs": 2, "held_out_centre": 6}))
        is None
    )
    _damage("altered", fold.path / "cams.npy")
    assert cached(cfg) is None  # the fold task then reports and rebuilds it
