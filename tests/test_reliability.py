"""Reliability: failing trials, W&B outage, secrets, lost nodes, and a corpus of bad inputs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from sweeps.cli import main
from sweeps.launch import run_sweep
from sweeps.spec import load_spec
from sweeps.status import format_status, read_run
from sweeps.tracking import offline_run_dirs, read_wandb_run
from tests.conftest import tiny_spec, write_frame

FAKE_KEY = "camsweep-planted-fake-key-0123456789abcdef0123"


@pytest.mark.slow
def test_failing_trial_wandb_outage_and_no_leaked_secret(tmp_path, local_ray, monkeypatch, capsys):
    # W&B "online" with a key, pointed at a closed loopback port: nothing answers.
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    raw = tiny_spec(
        tmp_path,
        space={"arch": "unet", "held_out_centre": {"grid": [2]}, "seed": {"grid": [0, 1]}},
        # The seed-1 trial diverges (NaN weights → NaN loss) on every attempt.
        fault={"nan_at_epoch": 1, "once": False, "seeds": [1]},
    )
    raw["tracking"] = {"wandb": {"mode": "online", "init_timeout_s": 2}}
    start = time.monotonic()
    run_dir = run_sweep(load_spec("t.yaml", raw=raw, local_gpus=0))
    elapsed = time.monotonic() - start
    trials = {t.config["seed"]: t for t in read_run(run_dir)}
    assert trials[0].finished
    # A trial that keeps failing is errored with its reason after Tune's retries.
    assert trials[1].status == "ERROR" and "diverged" in (trials[1].error or "")
    assert trials[1].failures == 3  # the first attempt and Tune's two retries
    assert "errored" in format_status(list(trials.values()), ["seed"])
    assert main(["status", str(run_dir)]) == 0
    assert "diverged" in capsys.readouterr().out
    # Trials finished on time despite the outage: well under the W&B timeouts × attempts.
    assert elapsed < 240, elapsed
    # The metrics were kept offline for a later `camsweep wandb-sync`.
    infos = [read_wandb_run(next(d.glob("run-*.wandb"))) for d in offline_run_dirs(run_dir)]
    kept = [i for i in infos if i["run_id"].endswith(trials[0].trial_id)]
    assert kept and any("val/dice" in h for i in kept for h in i["history"])
    # Export leaves the errored trial out and says so.
    assert main(["export", str(run_dir), "--no-wandb"]) == 0
    out = capsys.readouterr().out
    assert trials[1].trial_id in out and "left out" in out
    # The planted key appears in no file the sweep wrote (configs, logs, results, W&B, export).
    for path in run_dir.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert FAKE_KEY.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_lost_worker_node_trials_complete_and_resume_from_checkpoints(tmp_path):
    """A three-node cluster (head + two workers) loses a worker mid-sweep: every trial still
    finishes, resumed from its checkpoints, and the trials ran on both surviving nodes."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 128 << 20}
    )
    doomed = cluster.add_node(num_cpus=1, object_store_memory=128 << 20)
    cluster.add_node(num_cpus=1, object_store_memory=128 << 20)
    raw = tiny_spec(tmp_path, space={"arch": "unet", "held_out_centre": {"grid": [2, 6]},
                                     "seed": {"grid": [0, 1, 2]}})  # fmt: skip
    raw["train"].update(epochs=3, checkpoint_every=1)
    spec = load_spec("t.yaml", raw=raw, local_gpus=None)
    try:
        ray.init(address=cluster.address)
        import threading

        def remove_when_training() -> None:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                if list(tmp_path.glob("results/tiny-*/*/checkpoint_000001")):
                    cluster.remove_node(doomed)
                    return
                time.sleep(0.2)

        killer = threading.Thread(target=remove_when_training, daemon=True)
        killer.start()
        run_dir = run_sweep(spec, address=cluster.address)
        killer.join()
        trials = read_run(run_dir)
        assert len(trials) == 6 and all(t.finished for t in trials), format_status(trials, ["seed"])
        redone = 0
        for t in trials:
            epochs = [json.loads(line)["epoch"] for line in (t.path / "result.json").open()]
            redone += len(epochs) - len(set(epochs))
            assert sorted(set(epochs)) == [1, 2, 3]  # nothing reported before the loss is lost
        print(f"retried trials: {sum(t.failures for t in trials)}, epochs redone: {redone}")
        assert sum(t.failures for t in trials) >= 1  # the node loss really hit a trial
        # A sweep given a cluster's address spreads its trials over the nodes.
        nodes = {
            json.loads((t.path / "results.json").read_text())["provenance"]["ray_node_id"]
            for t in trials
        }
        assert len(nodes) == 2, nodes
    finally:
        ray.shutdown()
        cluster.shutdown()


# --- bad-input corpus: one clear message naming the culprit, exit 2, no traceback, nothing run --


def _base(tmp_path: Path) -> dict:
    return {
        "name": "bad",
        "data": {"source": "synthetic", "image_size": 32, "cache_dir": str(tmp_path / "c"),
                 "synthetic": {"per_centre": 4, "size": "64x64"}},
        "space": {"arch": {"grid": ["unet"]}, "held_out_centre": {"grid": [1]}},
        "storage": {"path": str(tmp_path / "out")},
    }  # fmt: skip


def _polypgen(tmp_path: Path, damage) -> dict:
    root = tmp_path / "pg"
    for c in (1, 2, 3):
        for i in range(3):
            write_frame(root, c, f"C{c}_P00{i}_0000")
    damage(root)
    raw = _base(tmp_path)
    raw["data"] = {"source": "polypgen", "root": str(root), "image_size": 32,
                   "cache_dir": str(tmp_path / "c")}  # fmt: skip
    return raw


def _set(path: str, value):
    def change(raw: dict, tmp_path: Path) -> dict:
        node = raw
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
        return raw

    return change


def _truncate(root: Path) -> None:
    img = root / "data_C2/images_C2/C2_P001_0000.jpg"
    img.write_bytes(img.read_bytes()[:80])


def _resize_mask(root: Path) -> None:
    from PIL import Image

    Image.new("L", (20, 32)).save(root / "data_C1/masks_C1/C1_P000_0000_mask.jpg")


CORPUS = {
    "unknown top-level key": (_set("colour", "red"), "colour: Extra inputs are not permitted"),
    "unknown data key": (_set("data.rooot", "/x"), "data.rooot: Extra inputs"),
    "wrong type epochs": (_set("train.epochs", "many"), "train.epochs"),
    "negative lr": (_set("train.lr", -1), "train.lr"),
    "batch size zero": (_set("train.batch_size", 0), "train.batch_size"),
    "cuda without a GPU share": (
        _set("train.device", "cuda"),
        "train.device cuda: resources.gpu is 0 — Ray would reserve no GPU",
    ),
    "p above 1": (_set("space.p", {"grid": [0.5, 1.5]}), "space.p: 1.5"),
    "p negative": (_set("space.p", -0.1), "space.p: -0.1"),
    "threshold zero": (_set("space.threshold", 0), "space.threshold: 0"),
    "threshold one": (_set("masking.threshold", 1.0), "masking.threshold"),
    "unknown architecture": (
        _set("space.arch", {"grid": ["resnet"]}),
        "unknown architecture 'resnet'",
    ),
    "unknown model variant": (_set("model.variant", "huge"), "model.variant"),
    "unknown classifier arch": (_set("classifier.arch", "vgg"), "unknown classifier arch 'vgg'"),
    "held-out centre absent": (
        _set("space.held_out_centre", {"grid": [9]}),
        "centre 9 is not in the data",
    ),
    "empty grid": (_set("space.arch", {"grid": []}), "space.arch.grid: must be a non-empty list"),
    "unknown axis": (_set("space.depth", 3), "space.depth: unknown axis"),
    "list without form": (_set("space.seed", [0, 1]), "space.seed: a list needs a form"),
    "inverted interval": (_set("space.lr", {"uniform": [1, 0]}), "low 1 must be below high 0"),
    "loguniform at zero": (_set("space.lr", {"loguniform": [0, 1]}), "bounds must be positive"),
    "duplicate grid values": (_set("space.arch", {"grid": ["unet", "unet"]}), "duplicate values"),
    "unknown search algorithm": (_set("search.algorithm", "bayes"), "search.algorithm"),
    "optuna without sampled axis": (_set("search.algorithm", "optuna"), "no sampled axis"),
    "unknown scheduler": (_set("scheduler.name", "pbt"), "scheduler.name"),
    "bad selection metric": (
        _set("search.metric", "test_out/dice"),
        "search.metric 'test_out/dice'",
    ),
    "unknown wandb mode": (_set("tracking.wandb.mode", "loud"), "tracking.wandb.mode"),
    "bad name": (_set("name", "my sweep!"), "name"),
    "gpu requested, none here": (_set("resources.gpu", 0.5), "resources.gpu 0.5: no GPU"),
    "zero cpus": (_set("resources.cpu", 0), "resources.cpu"),
    "per-arch resources for an unknown arch": (
        _set("resources.per_arch", {"unett": {"gpu": 1}}),
        "resources.per_arch: Value error, unknown architecture(s) unett",
    ),
    "per-arch gpu, none here": (
        _set("resources.per_arch", {"unet": {"gpu": 0.25}}),
        "resources.gpu 0.25: no GPU on this machine",
    ),
    "storage under a file": (
        lambda raw, tmp: (
            tmp.joinpath("f").write_text(""),
            _set("storage.path", str(tmp / "f/x"))(raw, tmp),
        )[1],
        "is a file, not a folder",
    ),
    "missing data root": (
        _set("data", {"source": "polypgen", "root": "/no/such/root"}),
        "/no/such/root: data root does not exist",
    ),
    "polypgen without root": (_set("data", {"source": "polypgen"}), "data.root: required"),
    "bad synthetic size": (_set("data.synthetic.size", "64by64"), "64by64"),
    "bad patient pattern": (
        _set("data.patient_pattern", "(?P<who>x)"),
        "needs a named group 'patient'",
    ),
    "empty centre": (
        lambda raw, tmp: _polypgen(
            tmp, lambda r: [p.unlink() for p in (r / "data_C3/images_C3").iterdir()]
        ),
        "centre C3 has no images",
    ),
    "image without mask": (
        lambda raw, tmp: _polypgen(
            tmp, lambda r: (r / "data_C1/masks_C1/C1_P000_0000_mask.jpg").unlink()
        ),
        "C1_P000_0000.jpg: no mask",
    ),
    "duplicate file names": (
        lambda raw, tmp: _polypgen(tmp, lambda r: write_frame(r, 2, "C1_P000_0000")),
        "duplicate file name 'C1_P000_0000.jpg' in centres [1, 2]",
    ),
    "corrupt JPEG": (lambda raw, tmp: _polypgen(tmp, _truncate), "C2_P001_0000.jpg: unreadable"),
    "mask size mismatch": (
        lambda raw, tmp: _polypgen(tmp, _resize_mask),
        "mask size (20, 32) differs from image size (32, 32)",
    ),
}


@pytest.mark.parametrize("case", sorted(CORPUS), ids=lambda c: c.replace(" ", "-"))
def test_bad_input_corpus(case, tmp_path, capsys):
    change, expected = CORPUS[case]
    raw = change(_base(tmp_path), tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))
    import ray

    was_running = ray.is_initialized()
    assert main(["run", str(spec)]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert "Traceback" not in err
    assert ray.is_initialized() == was_running  # refused before Ray started
    assert not list((tmp_path / "out").glob("bad-*")), "no run folder may be created"
