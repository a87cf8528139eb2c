"""One trial end to end without Ray: fold preparation, training with masking, resume, results."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from trainables.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from trainables.classifier import FoldLeakError, prepare_fold, train_centre_classifier
from trainables.config import ConfigError, TrialConfig, load_trial_config
from trainables.data.cache import load_or_build
from trainables.data.polypgen import index_polypgen
from trainables.data.splits import FoldSplit, leave_one_centre_out
from trainables.engine import Runtime
from trainables.run_files import PER_IMAGE_FILE
from trainables.trial import run_segmentation

HELD_OUT = 3


@pytest.fixture(scope="module")
def data(synth_decoded):
    return synth_decoded


@pytest.fixture(scope="module")
def split(data):
    return leave_one_centre_out(data.centres, data.patients, HELD_OUT, seed=0)


TINY = {
    "held_out_centre": HELD_OUT,
    "data.image_size": 32,
    "model.arch": "unet",
    "model.variant": "tiny",
    "classifier.arch": "resnet18",
    "classifier.epochs": 1,
    "classifier.batch_size": 8,
    "masking.p": 0.5,
    "train.epochs": 1,
    "train.batch_size": 4,
    "train.lr": 1e-3,
}


def tiny_config(**overrides) -> TrialConfig:
    """The tiny trial, with ``section__key=value`` overrides."""
    return load_trial_config(
        None, {**TINY, **{k.replace("__", "."): v for k, v in overrides.items()}}
    )


@pytest.fixture(scope="module")
def fold(data, split, tmp_path_factory):
    cfg = tiny_config()
    artefacts, reused = prepare_fold(
        data,
        split,
        cfg.classifier,
        Runtime.from_config(cfg.train),
        tmp_path_factory.mktemp("folds"),
    )
    assert not reused
    return artefacts


def test_fold_artefacts_cover_training_split_and_are_reused(data, split, fold):
    assert fold.held_out == HELD_OUT and HELD_OUT not in fold.centre_labels
    assert sorted(fold.centre_labels.values()) == list(range(5))
    np.testing.assert_array_equal(fold.train_indices, split.train)
    assert fold.cams.shape == (len(split.train), 32, 32)
    assert fold.cams.dtype == np.float16 and 0 <= fold.cams.min() and fold.cams.max() <= 1
    assert {"train_accuracy", "val_accuracy"} <= set(fold.metrics)
    cfg = tiny_config()
    again, reused = prepare_fold(
        data, split, cfg.classifier, Runtime.from_config(cfg.train), fold.path.parent
    )
    assert reused and again.path == fold.path
    other_cfg = tiny_config(classifier__seed=1)
    _, reused = prepare_fold(
        data, split, other_cfg.classifier, Runtime.from_config(cfg.train), fold.path.parent
    )
    assert not reused  # a different classifier config is a different fold artefact


def test_classifier_refuses_a_split_containing_the_held_out_centre(data, split):
    leaky = FoldSplit(
        held_out=HELD_OUT,
        seed=0,
        train=np.concatenate([split.train, split.test_out[:1]]),
        val=split.val,
        test_in=split.test_in,
        test_out=split.test_out[1:],
    )
    cfg = tiny_config()
    with pytest.raises(FoldLeakError, match="held-out centre C3"):
        train_centre_classifier(data, leaky, cfg.classifier, Runtime.from_config(cfg.train))


def _one_more_than_batches(split: FoldSplit, batch: int) -> FoldSplit:
    n = (len(split.train) // batch - 1) * batch + 1  # a final batch of one image
    return FoldSplit(split.held_out, split.seed, split.train[:n], split.val, split.test_in,
                     split.test_out)  # fmt: skip


@pytest.mark.parametrize("data_path", ["loader", "device"])
def test_deeplab_trains_on_a_split_one_more_than_whole_batches(data, split, data_path, tmp_path):
    """BatchNorm in train mode (DeepLabV3+'s ASPP pooling) fails on a one-image batch: the
    final incomplete training batch is dropped, in both data paths."""
    odd = _one_more_than_batches(split, 4)
    assert len(odd.train) % 4 == 1
    cfg = tiny_config(model__arch="deeplabv3plus", masking__p=0.0, train__data_path=data_path)
    result = run_segmentation(cfg, data, odd, None, tmp_path)
    assert np.isfinite(result.metrics["train/loss"])


def test_centre_classifier_drops_its_one_image_batch(data, split):
    # At 32 px ResNet's layer4 is 1x1: BatchNorm there needs more than one image per batch.
    cfg = tiny_config()
    odd = _one_more_than_batches(split, cfg.classifier.batch_size)
    model, metrics = train_centre_classifier(
        data, odd, cfg.classifier, Runtime.from_config(cfg.train)
    )
    assert 0 <= metrics["train_accuracy"] <= 1


def test_a_training_split_smaller_than_a_batch_is_refused(data, split, tmp_path):
    small = FoldSplit(split.held_out, split.seed, split.train[:3], split.val, split.test_in,
                      split.test_out)  # fmt: skip
    cfg = tiny_config(masking__p=0.0)
    with pytest.raises(ValueError, match="3 training frames, fewer than train.batch_size 4"):
        run_segmentation(cfg, data, small, None, tmp_path)


@pytest.mark.parametrize("arch", ["unet", "deeplabv3plus", "sdnet"])
def test_one_epoch_trial_per_architecture(arch, data, split, fold, tmp_path):
    cfg = tiny_config(model__arch=arch)
    reports = []
    result = run_segmentation(
        cfg, data, split, fold, tmp_path, report=lambda m, c: reports.append((m, c))
    )
    m = result.metrics
    for key in ("val/dice", "test_in/dice", "test_out/dice", "test_out/recall", "test_out/iou"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["best/epoch"] == 1 and np.isfinite(m["train/loss"])
    assert 0 <= m["train/masked_fraction"] <= 1
    if arch == "sdnet":
        assert {"train/recon_loss", "train/kl_loss", "train/latent_loss"} <= set(m)
    per_image = np.load(tmp_path / PER_IMAGE_FILE)
    assert len(per_image["test_out/dice"]) == len(split.test_out)
    assert set(data.centres[per_image["test_out/index"]]) == {HELD_OUT}
    # The final report carries the test metrics and the checkpoint.
    assert reports[-1][0]["test_out/dice"] == m["test_out/dice"] and reports[-1][1] is not None
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["metrics"]["test_out/dice"] == pytest.approx(m["test_out/dice"])
    assert results["fold"]["key"] == fold.key
    # The resolved config written next to the result runs as-is.
    assert load_trial_config(tmp_path / "config.yaml") == cfg
    assert (tmp_path / "split.csv").read_text().count("test_out") == len(split.test_out)


def test_masked_fraction_follows_p(data, split, fold, tmp_path):
    for p, lo, hi in ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)):
        cfg = tiny_config(masking__p=p)
        result = run_segmentation(cfg, data, split, fold if p else None, tmp_path / str(p))
        assert lo <= result.metrics["train/masked_fraction"] <= hi


def test_online_cam_mode_runs(data, split, fold, tmp_path):
    cfg = tiny_config(masking__cam_mode="online", masking__cam_target="true")
    result = run_segmentation(cfg, data, split, fold, tmp_path)
    assert 0.2 <= result.metrics["train/masked_fraction"] <= 0.8


def test_resumed_trial_matches_an_uninterrupted_one(data, split, fold, tmp_path):
    cfg2 = tiny_config(train__epochs=2, train__checkpoint_every=1)
    straight = run_segmentation(cfg2, data, split, fold, tmp_path / "straight")
    cfg1 = tiny_config(train__epochs=1)
    run_segmentation(cfg1, data, split, fold, tmp_path / "first")
    resumed = run_segmentation(
        cfg2, data, split, fold, tmp_path / "resumed", resume_dir=tmp_path / "first" / "checkpoint"
    )
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    for a, b in zip(straight.history, resumed.history):
        assert a["val/dice"] == pytest.approx(b["val/dice"], abs=1e-6)
        assert a["train/loss"] == pytest.approx(b["train/loss"], abs=1e-6)
    assert straight.metrics["test_out/dice"] == pytest.approx(resumed.metrics["test_out/dice"])
    # Resuming from a *final* checkpoint hands back the stored results without any work.
    again = run_segmentation(
        cfg2, data, split, fold, tmp_path / "again", resume_dir=tmp_path / "straight" / "checkpoint"
    )
    assert again.metrics == straight.metrics
    assert (tmp_path / "again" / "results.json").read_text() == (
        tmp_path / "straight" / "results.json"
    ).read_text()


def test_a_finished_trial_resumed_from_an_earlier_checkpoint_is_not_trained_again(
    data, split, fold, tmp_path
):
    """The driver can die after a trial wrote its results but before Tune recorded its final
    checkpoint; Tune then resumes it from an earlier checkpoint, or restarts it when it had
    none, with its trial folder cleared. The results kept in the trial's finished_dir are
    handed back as they are: no training, no evaluation."""
    cfg = tiny_config()
    finished = tmp_path / "finished"
    first = run_segmentation(cfg, data, split, fold, tmp_path / "trial", finished_dir=finished)
    text = (tmp_path / "trial" / "results.json").read_text()
    assert (finished / "results.json").read_text() == text
    shutil.rmtree(tmp_path / "trial")  # Tune clears a trial's folder when it restores it
    earlier = tmp_path / "epoch-0-checkpoint"  # no state.pt: training from it would fail
    earlier.mkdir()
    for resume_dir in (earlier, None):
        reports = []
        again = run_segmentation(
            cfg, data, split, fold, tmp_path / "trial", resume_dir=resume_dir,
            finished_dir=finished, report=lambda m, c, out=reports: out.append(m),
        )  # fmt: skip
        assert again.metrics == first.metrics and again.model is None
        assert (tmp_path / "trial" / "results.json").read_text() == text
        assert reports == [first.metrics]
    # Another config in the same folder is not mistaken for it.
    with pytest.raises(CheckpointError, match="state.pt: checkpoint does not exist"):
        run_segmentation(tiny_config(seed=1), data, split, fold, tmp_path / "trial",
                         resume_dir=earlier, finished_dir=finished)  # fmt: skip


def test_checkpoint_round_trip_and_corruption_detected(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"epoch": 3, "w": torch.arange(4)})
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3 and torch.equal(loaded["w"], torch.arange(4))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temp files left
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_config_errors_list_every_problem(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": {"arch": "resnet", "colour": 1},
                "masking": {"p": 1.5, "threshold": 0},
                "train": {"epochs": "many"},
            }
        )
    )
    with pytest.raises(ConfigError) as err:
        load_trial_config(path)
    text = str(err.value)
    assert "5 problem(s)" in text
    assert (
        "model.arch: Value error, unknown architecture 'resnet'; valid: unet, deeplabv3plus, sdnet"
        in text
    )
    assert "model.colour: Extra inputs are not permitted" in text
    assert "masking.p:" in text and "(got 1.5)" in text
    assert "masking.threshold:" in text and "train.epochs:" in text


def test_cli_train_runs_a_trial(tmp_path, capsys):
    from sweeps.cli import main

    cache = tmp_path / "cache"
    argv = [
        "train", "--arch", "unet", "--variant", "tiny", "--held-out", "2", "--p", "0.5",
        "--epochs", "1", "--image-size", "32", "--out", str(tmp_path / "trial"),
        "--set", f"data.cache_dir={cache}", "--set", "data.synthetic.per_centre=16",
        "--set", "data.synthetic.size=48x48", "--set", "classifier.arch=resnet18",
        "--set", "classifier.epochs=1",
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "centre classifier (trained" in out and "test_out" in out
    assert main(argv) == 0
    assert "centre classifier (reused" in capsys.readouterr().out
    assert main(["train", "--set", "masking.p=2"]) == 2
    assert "masking.p" in capsys.readouterr().err
    few = [*argv[:-4], "--set", "data.synthetic.per_centre=3", "--out", str(tmp_path / "few")]
    assert main(few) == 2
    captured = capsys.readouterr()
    assert "empty train or validation split" in captured.err
    assert "centre classifier" not in captured.out  # refused before any training


def test_best_configs_file_entries(tmp_path):
    cfg = tiny_config(model__arch="sdnet")
    path = tmp_path / "best_configs.yaml"
    path.write_text(
        yaml.safe_dump({"selection": "val/dice", "configs": {"sdnet/C3": cfg.to_dict()}})
    )
    assert load_trial_config(path, entry="sdnet/C3") == cfg
    with pytest.raises(ConfigError, match="choose one with --entry; entries: sdnet/C3"):
        load_trial_config(path)
    with pytest.raises(ConfigError, match="no entry 'unet/C1'"):
        load_trial_config(path, entry="unet/C1")


def test_corrupted_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    from trainables.checkpoint import first_loadable

    old, new = tmp_path / "checkpoint_000001", tmp_path / "checkpoint_000002"
    for folder in (old, new):
        save_checkpoint(folder / "state.pt", {"epoch": int(folder.name[-1])})
        save_checkpoint(folder / "best.pt", {"epoch": 1})
    files = ("state.pt", "best.pt")
    assert first_loadable([new, old], files) == new
    (new / "best.pt").write_bytes(b"\x00" * 10)  # half-written
    assert first_loadable([new, old], files) == old
    (old / "state.pt").unlink()
    assert first_loadable([new, old], files) is None


def test_masking_really_occludes_pixels_at_64px(synth_root, tmp_path):
    # At 32 px ResNet's layer4 is 1×1, so every CAM is constant (→ zeros) and masking is vacuous;
    # at 64 px it is 2×2 and the binarised CAM covers part of each frame.
    data, _ = load_or_build(index_polypgen(synth_root), 64, tmp_path / "cache")
    split = leave_one_centre_out(data.centres, data.patients, HELD_OUT, seed=0)
    cfg = tiny_config(**{"data__image_size": 64, "masking__p": 1.0})
    fold, _ = prepare_fold(
        data, split, cfg.classifier, Runtime.from_config(cfg.train), tmp_path / "folds"
    )
    masked = run_segmentation(cfg, data, split, fold, tmp_path / "masked")
    base = run_segmentation(
        tiny_config(data__image_size=64, masking__p=0.0), data, split, None, tmp_path / "base"
    )
    assert masked.metrics["train/masked_fraction"] == 1.0
    assert 0.05 < masked.metrics["train/masked_pixels"] < 0.95
    assert base.metrics["train/masked_pixels"] == 0.0
    assert masked.metrics["train/loss"] != base.metrics["train/loss"]


def test_device_data_path_trains_with_cached_cams(data, split, fold, tmp_path):
    # The fast path (default on CUDA) forced on the CPU: same trial, batches built on-device.
    cfg = tiny_config(train__data_path="device", train__epochs=2, masking__p=1.0)
    result = run_segmentation(cfg, data, split, fold, tmp_path)
    assert result.metrics["train/masked_fraction"] == 1.0
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert 0 <= result.metrics["test_out/dice"] <= 1
    per_image = np.load(tmp_path / PER_IMAGE_FILE)
    assert sorted(per_image["test_out/index"]) == sorted(split.test_out)


def test_restored_optimizer_keeps_its_step_counters_on_the_host(tmp_path):
    """On resume the weights and moments go to the parameters' device, AdamW's step counters stay
    on the host: counters on a GPU would make every optimizer step stall on a device read. The
    meta device stands in for a GPU here."""
    from trainables.trial import restore_training_state

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    path = tmp_path / "state.pt"
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 7}
    save_checkpoint(path, state)
    moved = torch.nn.Linear(3, 2, device="meta")
    moved_optimizer = torch.optim.AdamW(moved.parameters())
    with pytest.warns(UserWarning, match="meta parameter"):  # copying into meta is a no-op
        rest = restore_training_state(path, moved, moved_optimizer)
    assert rest["epoch"] == 7
    for param_state in moved_optimizer.state.values():
        assert param_state["step"].device.type == "cpu"
        assert param_state["exp_avg"].device.type == "meta"


def test_a_task_granted_no_gpu_trains_on_the_cpu_even_on_a_gpu_node(monkeypatch):
    """``device: auto`` follows the GPU share Ray granted, not the GPUs the node has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU node
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda **kw: True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)  # restored after the test
    auto = TrialConfig().train
    assert auto.device == "auto"
    assert Runtime.from_config(auto, granted_gpus=0).device.type == "cpu"
    assert Runtime.from_config(auto, granted_gpus=0.5).device.type == "cuda"
    assert Runtime.from_config(auto).device.type == "cuda"  # outside Ray: the node's GPU
    with pytest.raises(ValueError, match="granted this task no GPU"):
        Runtime.from_config(auto.model_copy(update={"device": "cuda"}), granted_gpus=0)


def _no_host_waits_after_the_first(batches):
    """Yields ``batches``; from the second training step on, any host synchronisation raises
    (the first step builds per-device constants and runs cuDNN's autotuning)."""
    stream = iter(batches)
    first = next(stream, None)
    if first is None:
        return
    yield first
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield from stream
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ["unet", "deeplabv3plus", "sdnet"])
@pytest.mark.parametrize("cam_mode", ["cached", "online"])
def test_cuda_training_steps_never_wait_for_the_host_before_or_after_a_resume(
    arch, cam_mode, data, split, fold, tmp_path, monkeypatch
):
    """The fast path as a sweep runs it (device data path, bf16, channels_last, masking): no
    training step after the first waits for the host — neither in a fresh trial nor in one
    resumed from a checkpoint (whose optimizer state came back from disk)."""
    import trainables.trial as trial

    real = trial.train_one_epoch
    monkeypatch.setattr(
        trial,
        "train_one_epoch",
        lambda model, loader, *a, **kw: real(
            model, _no_host_waits_after_the_first(loader), *a, **kw
        ),
    )
    common = {"model__arch": arch, "masking__cam_mode": cam_mode, "masking__cam_target": "true"}
    first = tiny_config(train__epochs=1, **common)
    assert Runtime.from_config(first.train).amp  # bf16 on this GPU, as auto picks
    run_segmentation(first, data, split, fold, tmp_path / "first")
    resumed = run_segmentation(
        tiny_config(train__epochs=2, **common),
        data,
        split,
        fold,
        tmp_path / "resumed",
        resume_dir=tmp_path / "first" / "checkpoint",
    )
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert 0 < resumed.metrics["train/masked_fraction"] < 1


def test_out_of_memory_error_names_the_share_to_raise():
    """A packed trial that runs out of GPU memory says which spec setting fixes it, on the last
    line of its error (the one status and export show)."""
    from trainables.segmentation import with_packing_advice

    cfg = tiny_config(model__arch="deeplabv3plus")
    error = with_packing_advice(torch.OutOfMemoryError("CUDA out of memory. Tried …"), cfg, 0.25)
    assert isinstance(error, torch.OutOfMemoryError)
    lines = str(error).splitlines()
    assert lines[0] == "CUDA out of memory. Tried …"
    assert "resources.per_arch.deeplabv3plus.gpu: 0.5" in lines[-1]
    assert "train.batch_size" in lines[-1]


def test_classifier_kept_at_its_best_validation_accuracy_when_asked(data, split):
    """classifier.select best_val_accuracy (the released code's checkpoint rule) keeps the
    epoch with the best validation accuracy: never worse on validation than the last epoch's."""
    runtime = Runtime.from_config(tiny_config().train)
    results = {}
    for select in ("last", "best_val_accuracy"):
        cfg = tiny_config(classifier__epochs=3, classifier__select=select).classifier
        _, results[select] = train_centre_classifier(data, split, cfg, runtime)
    assert results["last"]["selected_epoch"] == 3
    assert 1 <= results["best_val_accuracy"]["selected_epoch"] <= 3
    assert results["best_val_accuracy"]["val_accuracy"] >= results["last"]["val_accuracy"]


def test_a_segmentation_augmented_classifier_follows_the_trial_s_augmentations(data, split):
    from trainables.classifier import FLIPS_ONLY, classifier_augment, fold_key
    from trainables.config import AugmentConfig

    released = AugmentConfig(normalise="first", rotate_border="reflect", hue=0.2)
    flips = tiny_config().classifier
    seg = tiny_config(classifier__augment="segmentation").classifier
    assert classifier_augment(seg, released) == released
    assert classifier_augment(flips, released) == FLIPS_ONLY
    cam = tiny_config().masking.cam
    # The fold cache tells the two apart only where the classifier really trains with them.
    assert fold_key(data, split, seg, cam, released) != fold_key(data, split, seg, cam)
    assert fold_key(data, split, flips, cam, released) == fold_key(data, split, flips, cam)
