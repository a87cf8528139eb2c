"""From a sweep to masks: exported model folders, `camsweep predict` and `camsweep evaluate`."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sweeps.cli import main
from trainables.model_folder import MANIFEST_FILE, WEIGHTS_FILE, write_untrained

SIZE = 32


def make_model_folder(path: Path, folds=(2, 6)) -> Path:
    """A model folder as `export` writes it, with untrained tiny UNets, without a sweep."""
    return write_untrained(path, folds=folds, image_size=SIZE).path


def write_frames(folder: Path) -> dict[str, tuple[int, int]]:
    """Frames of mixed sizes and formats (one grayscale); returns name → (width, height)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sizes = {"a.jpg": (64, 48), "b.png": (33, 71), "c.png": (32, 32), "d.bmp": (120, 90)}
    for name, (w, h) in sizes.items():
        pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        (image.convert("L") if name == "b.png" else image).save(folder / name)
    return sizes


def read_probabilities(folder: Path, stem: str) -> np.ndarray:
    return np.load(folder / "probabilities" / f"{stem}.npy").astype(np.float32)


def test_predict_writes_one_mask_per_frame_at_its_size_and_the_ensemble_is_the_fold_mean(
    tmp_path, capsys
):
    model = make_model_folder(tmp_path / "model")
    sizes = write_frames(tmp_path / "frames")
    outs = {}
    for name, folds in (("ensemble", []), ("c2", ["--folds", "C2"]), ("c6", ["--folds", "6"])):
        outs[name] = tmp_path / name
        args = ["predict", "--model", str(model), "--images", str(tmp_path / "frames")]
        args += ["--out", str(outs[name]), "--save-probabilities", "--batch-size", "3", *folds]
        assert main(args) == 0
    printed = capsys.readouterr().out
    assert "predicted 4 frame(s) with a 2-model ensemble (C2 seed 0, C6 seed 0)" in printed
    assert "with one model (C2 seed 0)" in printed
    for name, (w, h) in sizes.items():
        stem = Path(name).stem
        mask = np.asarray(Image.open(outs["ensemble"] / f"{stem}.png"))
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
        probs = {k: read_probabilities(outs[k], stem) for k in outs}
        assert probs["ensemble"].shape == (h, w)
        # Soft voting: the mean of the single-fold probabilities (float16 files: ~1e-3).
        np.testing.assert_allclose(probs["ensemble"], (probs["c2"] + probs["c6"]) / 2, atol=2e-3)
        assert not np.allclose(probs["c2"], probs["c6"], atol=1e-2)  # two different models
        # The mask is the ensemble probability thresholded (away from the rounding band).
        clear = np.abs(probs["ensemble"] - 0.5) > 2e-3
        np.testing.assert_array_equal((mask == 255)[clear], (probs["ensemble"] > 0.5)[clear])


def test_the_ensemble_averages_its_members_exactly(tmp_path):
    from trainables.inference import Ensemble

    ensemble = Ensemble.load(make_model_folder(tmp_path / "m"), device="cpu")
    images = np.random.default_rng(1).integers(0, 255, (3, SIZE, SIZE, 3), dtype=np.uint8)
    each = ensemble.member_probabilities(images).numpy()
    assert each.shape == (2, 3, SIZE, SIZE)
    np.testing.assert_allclose(ensemble.probabilities(images), each.mean(0), rtol=0, atol=0)


def _predict(model: Path, images: Path, out: Path, *extra: str) -> int:
    return main(
        ["predict", "--model", str(model), "--images", str(images), "--out", str(out), *extra]
    )


def test_bad_predict_inputs_get_a_message_naming_the_file_exit_2_and_nothing_written(
    tmp_path, capsys
):
    model = make_model_folder(tmp_path / "model")
    frames = tmp_path / "frames"
    write_frames(frames)
    out = tmp_path / "out"

    def refused(expected: str, model_dir=model, images=frames, *extra: str) -> None:
        assert _predict(model_dir, images, out, *extra) == 2
        err = capsys.readouterr().err
        assert expected in err, err
        assert "Traceback" not in err and not out.exists()

    (frames / "broken.jpg").write_bytes(b"not a jpeg at all")
    refused(f"{frames / 'broken.jpg'}: unreadable image")
    (frames / "broken.jpg").unlink()

    (tmp_path / "empty").mkdir()
    refused(f"{tmp_path / 'empty'}: no images", images=tmp_path / "empty")
    refused(f"{tmp_path / 'nowhere'}: images folder does not exist", images=tmp_path / "nowhere")

    manifest = json.loads((model / MANIFEST_FILE).read_text())
    old = tmp_path / "old-model"
    make_model_folder(old)
    (old / MANIFEST_FILE).write_text(json.dumps(manifest | {"versions": {"camsweep": "0.0.1"}}))
    refused("exported by camsweep 0.0.1", model_dir=old)

    (old / MANIFEST_FILE).write_text(json.dumps(manifest))
    (old / "C6-seed0" / WEIGHTS_FILE).unlink()
    refused(f"{old / 'C6-seed0' / WEIGHTS_FILE}: missing", model_dir=old)
    refused(f"{tmp_path / MANIFEST_FILE}: missing", model_dir=tmp_path)
    refused("--folds C3 not in this model (it has C2, C6)", model, frames, "--folds", "C3")

    (old / "C6-seed0" / WEIGHTS_FILE).write_bytes(b"truncated")
    refused(f"{old / 'C6-seed0' / WEIGHTS_FILE}: cannot load C6 seed 0's weights", model_dir=old)

    # Existing masks are kept unless --overwrite is given.
    assert _predict(model, frames, out) == 0
    before = (out / "a.png").stat().st_mtime_ns
    assert _predict(model, frames, out) == 2
    assert "exists (4 of the outputs already" in capsys.readouterr().err
    assert (out / "a.png").stat().st_mtime_ns == before
    assert _predict(model, frames, out, "--overwrite") == 0
    assert _predict(model, frames, frames) == 2  # masks would replace the frames
    assert "is the images folder" in capsys.readouterr().err


def _tree(root: Path, images: str, masks: str, names: list[str]) -> None:
    (root / images).mkdir(parents=True)
    (root / masks).mkdir(parents=True)
    rng = np.random.default_rng(2)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
            root / images / name
        )
        mask = np.zeros((40, 48), np.uint8)
        mask[10:25, 12:30] = 255
        Image.fromarray(mask).save(root / masks / name)


def test_evaluate_scores_each_dataset_of_the_five_dataset_test_folder(tmp_path, capsys):
    model = make_model_folder(tmp_path / "model")
    root = tmp_path / "TestDataset"
    for name in ("CVC-300", "Kvasir"):
        _tree(root / name, "images", "masks", ["1.png", "2.png", "3.png"])
    out = tmp_path / "scores"
    args = ["evaluate", "--model", str(model), "--data", str(tmp_path), "--n-boot", "200"]
    assert main([*args, "--out", str(out), "--resolution", "original"]) == 0
    printed = capsys.readouterr().out
    assert "| CVC-300 | 3 |" in printed and "| Kvasir | 3 |" in printed and "| all | 6 |" in printed
    assert "Note:" not in printed  # not the data the models were trained on
    rows = {r["dataset"]: r for r in csv.DictReader((out / "evaluation.csv").open())}
    per_image = list(csv.DictReader((out / "per_image.csv").open()))
    assert len(per_image) == 6
    for name in ("CVC-300", "Kvasir"):
        dice = [float(r["dice"]) for r in per_image if r["dataset"] == name]
        assert float(rows[name]["dice"]) == pytest.approx(np.mean(dice))
        assert (
            float(rows[name]["dice_ci_low"]) <= np.mean(dice) <= float(rows[name]["dice_ci_high"])
        )
    # A second run into the same folder needs --overwrite; bad data names the file, before work.
    assert main([*args, "--out", str(out)]) == 2
    assert "not empty; pass --overwrite" in capsys.readouterr().err
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "Kvasir" / "masks" / "2.png")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{root / 'Kvasir' / 'masks' / '2.png'}: mask size (10, 10) differs" in err


@pytest.mark.slow
def test_a_sweeps_exported_models_reproduce_its_out_of_distribution_scores(
    straight_run, tmp_path, capsys
):
    from sweeps.spec import load_spec
    from sweeps.status import read_run
    from trainables.data.source import synthetic_root
    from trainables.model_folder import read_model_folder

    _, raw, run_dir = straight_run
    out = tmp_path / "export"
    assert main(["export", str(run_dir), "--no-wandb", "--n-boot", "200", "--out", str(out)]) == 0
    assert "models/unet/manifest.json" in capsys.readouterr().out
    manifest = read_model_folder(out / "models" / "unet")
    assert manifest.folds == [2, 6] and manifest.missing == [] and manifest.arm == "best"
    assert manifest.preprocessing.image_size == raw["data"]["image_size"]
    assert manifest.selection == "validation: val/dice"
    trials = {t.trial_id: t for t in read_run(run_dir)}
    for member in manifest.members:
        stored = json.loads((trials[member.trial_id].path / "results.json").read_text())
        assert stored["config"]["held_out_centre"] == member.fold
        assert stored["config"]["masking"]["p"] == member.p
        assert member.scores["test_out/dice"] == pytest.approx(stored["metrics"]["test_out/dice"])

    # evaluate, one fold, on the sweep's own data: the held-out centre's row is test_out.
    data_root = synthetic_root(load_spec("tiny.yaml", raw=raw, local_gpus=0).data)
    scores = tmp_path / "scores"
    for member in manifest.members:
        args = ["evaluate", "--model", str(manifest.path), "--data", str(data_root)]
        args += ["--folds", f"C{member.fold}", "--n-boot", "200", "--out", str(scores)]
        assert main([*args, "--overwrite"]) == 0
        assert "the dataset the models were trained on" in capsys.readouterr().out
        rows = {r["dataset"]: r for r in csv.DictReader((scores / "evaluation.csv").open())}
        assert float(rows[f"C{member.fold}"]["dice"]) == pytest.approx(
            member.scores["test_out/dice"], abs=1e-6
        )

    # predict with the exported ensemble: one mask per frame, at each frame's own size.
    sizes = write_frames(tmp_path / "frames")
    args = ["predict", "--model", str(manifest.path), "--images", str(tmp_path / "frames")]
    assert main([*args, "--out", str(tmp_path / "masks")]) == 0
    assert "with a 2-model ensemble (C2 seed" in capsys.readouterr().out
    for name, (w, h) in sizes.items():
        assert Image.open(tmp_path / "masks" / f"{Path(name).stem}.png").size == (w, h)

    # An interrupted sweep (a copy: the run is shared): a fold without a finished trial is
    # listed as missing.
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("export*"))
    for t in read_run(copy):
        if t.config["held_out_centre"] == 6:
            (t.path / "results.json").unlink()
    partial = tmp_path / "partial"
    assert main(["export", str(copy), "--no-wandb", "--n-boot", "200", "--out", str(partial)]) == 0
    manifest = read_model_folder(partial / "models" / "unet")
    assert manifest.folds == [2]
    assert manifest.missing == [{"fold": 6, "reason": "no finished trial in the best arm"}]
