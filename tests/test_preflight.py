"""Offline weights (`camsweep weights fetch`) and the preflight on every node before the first
trial. Most cases call the per-node check directly with the node's view (another data root, a
storage path it cannot write); one runs `camsweep run` on the embedded Ray and sees it refused."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from sweeps.cli import main
from sweeps.preflight import (
    GpuNeed,
    NodeChecks,
    gather,
    gpu_need,
    gpu_problems,
    node_problems,
    preflight_checks,
)
from sweeps.spec import SweepSpec, load_spec, smoke
from sweeps.weights import Caches, UrlWeight, fetch_weights, required_weights, trial_env
from tests.conftest import tiny_spec, write_frame

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "sweeps" / "paper-table1.yaml"
SMP_REPO = "smp-hub/resnet18.imagenet"  # the tiny models' encoder in smp 0.6
TV_FILE = "resnet18-f37072fd.pth"  # torchvision's resnet18 DEFAULT, as TORCH_HOME keeps it


def imagenet_spec(tmp_path: Path, cache: Path | None = None) -> SweepSpec:
    """A tiny sweep (UNet, one masked fold) with both ImageNet weights, read from ``cache``."""
    raw = tiny_spec(tmp_path, model={"variant": "tiny", "encoder_weights": "imagenet"})
    raw["classifier"]["weights"] = "imagenet"
    raw["weights"] = {"cache": str(cache or tmp_path / "weights")}
    return load_spec("tiny.yaml", raw=raw, environment=False)


def test_a_spec_needs_its_encoders_and_classifier_and_local_files_stay_files(tmp_path):
    spec = imagenet_spec(tmp_path)
    hub, url = required_weights(spec)
    assert (hub.repo_id, hub.filenames) == (SMP_REPO, ("config.json", "model.safetensors"))
    assert "unet" in hub.what and (url.filename, url.sha256_prefix) == (TV_FILE, "f37072fd")
    paper = load_spec(PAPER, environment=False)
    repos = {w.repo_id for w in required_weights(paper) if hasattr(w, "repo_id")}
    assert repos == {"smp-hub/resnet34.imagenet", "smp-hub/resnet101.imagenet"}  # sdnet: none

    # --smoke keeps named weights, now of its tiny models; a local file for the spec's own
    # encoder would not fit them, so it is dropped.
    small = load_spec("s.yaml", raw=smoke(yaml.safe_load(PAPER.read_text())), environment=False)
    assert {getattr(w, "repo_id", None) or w.filename for w in required_weights(small)} == {
        SMP_REPO, TV_FILE,
    }  # fmt: skip
    assert smoke({"model": {"encoder_weights": "/x/r34.pth"}})["model"]["encoder_weights"] is None

    # Local files are read where they are: present passes, absent names the file, no fetch.
    file = tmp_path / "r18.pth"
    file.write_bytes(b"x")
    raw = tiny_spec(tmp_path, model={"variant": "tiny", "encoder_weights": str(file)})
    raw["classifier"]["weights"] = str(tmp_path / "gone.pth")
    spec = load_spec("tiny.yaml", raw=raw, environment=False)
    checks = NodeChecks(weights=tuple(required_weights(spec)))
    [problem] = node_problems(checks)
    assert "classifier.weights" in problem and "gone.pth not found" in problem
    assert "weights fetch" not in problem


def test_missing_weights_give_one_message_per_node_naming_the_weight_and_the_fetch(tmp_path):
    spec = imagenet_spec(tmp_path, cache=tmp_path / "empty")
    checks = preflight_checks(
        spec, centres=[], frames=96, writable=[], fetch="camsweep weights fetch s.yaml --smoke"
    )
    assert checks.gpu is None  # a CPU-only spec has no GPU check
    # Two nodes' answers (each ran the same check; neither has the cache), gathered as the
    # driver does: every problem of every node, each naming its node.
    lines = gather(
        {"gpu-a (10.0.0.1)": node_problems(checks), "gpu-b (10.0.0.2)": node_problems(checks)}
    )
    assert len(lines) == 4
    for node in ("gpu-a (10.0.0.1)", "gpu-b (10.0.0.2)"):
        [encoder] = [x for x in lines if node in x and "model.encoder_weights" in x]
        [classifier] = [x for x in lines if node in x and "classifier.weights" in x]
        assert SMP_REPO in encoder and TV_FILE in classifier
        assert all(
            "run `camsweep weights fetch s.yaml --smoke`" in x for x in (encoder, classifier)
        )


def test_a_node_without_the_data_root_or_with_missing_centres(tmp_path):
    spec = SweepSpec.model_validate(
        {"name": "p", "data": {"source": "polypgen", "root": str(tmp_path / "PolypGen")}}
    )
    missing = preflight_checks(spec, centres=[1, 2, 3], frames=1, writable=[])
    [problem] = node_problems(missing)  # this node's view: nothing mounted at data.root
    assert "data.root" in problem and "PolypGen: not found on this node" in problem

    for c in (1, 2):  # another node: a copy with two of the three centres
        write_frame(tmp_path / "PolypGen", c, f"{c}_a")
    [problem] = node_problems(missing)
    assert "centre(s) C3 missing on this node (it has C1, C2)" in problem
    assert node_problems(preflight_checks(spec, centres=[1, 2], frames=1, writable=[])) == []


def test_storage_that_a_node_cannot_write_is_reported(tmp_path):
    # Root ignores permission bits, so a read-only folder would pass here: the storage sits
    # under a regular file instead, which no user can create anything in.
    (tmp_path / "file").write_text("not a folder")
    blocked = tmp_path / "file" / "results" / "run"
    ok = tmp_path / "new" / "results"  # not created yet: its nearest existing parent is tested
    [problem] = node_problems(NodeChecks(writable=(str(blocked), str(ok))))
    assert (
        f"storage {blocked}: not writable from this node" in problem
        and "Not a directory" in problem
    )
    assert not ok.exists() and list(tmp_path.iterdir()) == [tmp_path / "file"]  # nothing left


def test_gpu_check_counts_visible_gpus_and_free_memory_against_the_floor(tmp_path, monkeypatch):
    import torch

    raw = tiny_spec(tmp_path, resources={"cpu": 1, "gpu": 0.5})
    raw["train"]["device"] = "auto"  # tiny_spec trains on the CPU
    spec = SweepSpec.model_validate(raw)  # not load_spec: this machine has no GPU to check
    need = gpu_need(spec, frames=96)
    assert need.why.startswith("2 unet trial(s) of 0.5 GPU × ") and need.gib > 0

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (2**30, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "Fake H100")
    [hidden] = gpu_problems(need, gpus=2)
    assert "Ray offers 2 GPU(s) here but torch sees 1" in hidden
    big = GpuNeed(4.0, "2 deeplabv3plus trial(s) of 0.5 GPU × 2.00 GiB memory floor")
    [full] = gpu_problems(big, gpus=1)
    assert "GPU 0 (Fake H100): 1.0 of 80.0 GiB free, but 2 deeplabv3plus" in full
    assert gpu_problems(None, gpus=1) == [] and gpu_problems(big, gpus=0) == []


# --- `camsweep weights fetch` against a stand-in of the weight servers ------------------------------


class _Server(ThreadingHTTPServer):
    files: dict[str, bytes]
    requests: list[str]


class _Handler(BaseHTTPRequestHandler):
    """Hugging Face's resolve endpoint (the headers hf_hub_download reads) and a plain file URL."""

    def _head(self) -> bytes | None:
        self.server.requests.append(f"{self.command} {self.path}")
        body = self.server.files.get(self.path.split("?")[0])
        if body is None:
            self.send_response(404)
            self.end_headers()
            return None
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        if "/resolve/" in self.path:  # /<repo>/resolve/<commit>/<file>
            self.send_header("X-Repo-Commit", self.path.split("/resolve/")[1].split("/")[0])
        self.end_headers()
        return body

    def do_HEAD(self):
        self._head()

    def do_GET(self):
        body = self._head()
        if body is not None:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def weight_server(tmp_path, monkeypatch):
    """Serves a random-init resnet18 (fp16, to keep it small) as smp's encoder repo and as
    torchvision's file; HF_ENDPOINT and the classifier URL table point at it."""
    import huggingface_hub.constants
    import torch
    from safetensors.torch import save_file
    from torchvision.models import resnet18

    import sweeps.weights

    torch.manual_seed(0)
    state = {
        k: v.half() if v.is_floating_point() else v for k, v in resnet18().state_dict().items()
    }
    tv = tmp_path / "served.pth"
    torch.save(state, tv)
    st = tmp_path / "served.safetensors"
    save_file({k: v.contiguous() for k, v in state.items() if not k.startswith("fc.")}, st)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.requests = []
    base = f"http://127.0.0.1:{server.server_port}"
    [hub] = [w for w in required_weights(imagenet_spec(tmp_path)) if hasattr(w, "repo_id")]
    resolve = f"/{SMP_REPO}/resolve/{hub.revision}"
    server.files = {
        f"{resolve}/config.json": b"{}",
        f"{resolve}/model.safetensors": st.read_bytes(),
        f"/models/{TV_FILE}": tv.read_bytes(),
    }
    digest = hashlib.sha256(server.files[f"/models/{TV_FILE}"]).hexdigest()
    monkeypatch.setenv("HF_ENDPOINT", base)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # conftest's
    monkeypatch.setattr(
        sweeps.weights,
        "torchvision_weight",
        # The file name torchvision reads; the hash torch.hub checks is the stand-in's own.
        lambda arch: UrlWeight(
            "classifier.weights",
            f"{arch} classifier",
            f"{base}/models/{TV_FILE}",
            TV_FILE,
            digest[:8],
        ),  # fmt: skip
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_weights_fetch_fills_the_cache_once_and_trials_load_offline(tmp_path, weight_server):
    cache = tmp_path / "weights"
    spec = imagenet_spec(tmp_path, cache)
    fetched, present = fetch_weights(spec, report=lambda line: None)
    assert (len(fetched), len(present)) == (2, 0)
    caches = Caches.here(str(cache))
    assert (caches.checkpoints / TV_FILE).is_file()
    assert list((caches.hf_hub / "models--smp-hub--resnet18.imagenet" / "snapshots").rglob("*"))
    served = len(weight_server.requests)
    assert served >= 3

    # Again: everything is found, nothing is downloaded; the node check agrees.
    lines: list[str] = []
    fetched, present = fetch_weights(spec, report=lines.append)
    assert (len(fetched), len(present), len(weight_server.requests)) == (0, 2, served)
    assert all(line.startswith("present") for line in lines)
    checks = preflight_checks(spec, centres=[], frames=1, writable=[])
    assert node_problems(checks) == []

    # A trial's process: the sweep's worker environment (HF_HUB_OFFLINE=1, the spec's cache)
    # and a dead endpoint, so any download would fail. It builds both models from the cache.
    env = {**os.environ, **trial_env(spec.weights_cache()), "HF_ENDPOINT": "http://127.0.0.1:9"}
    code = (
        "from trainables.models import build_model, build_centre_classifier\n"
        "m = build_model('unet', variant='tiny', encoder_weights='imagenet')\n"
        "c = build_centre_classifier(2, arch='resnet18', weights='imagenet')\n"
        "print(float(m.encoder.conv1.weight.sum()), float(c.backbone.conv1.weight.sum()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    import torch

    want = torch.load(tmp_path / "served.pth")["conv1.weight"].float().sum().item()
    assert [pytest.approx(want, rel=1e-3)] * 2 == [float(x) for x in out.stdout.split()]
    assert len(weight_server.requests) == served


# --- the CLI: refused before anything is computed ---------------------------------------------------


def test_run_with_weights_missing_exits_2_naming_them_and_starts_nothing(
    tmp_path, local_ray, capsys
):
    raw = tiny_spec(tmp_path, model={"variant": "tiny", "encoder_weights": "imagenet"})
    raw["classifier"]["weights"] = "imagenet"
    raw["weights"] = {"cache": str(tmp_path / "empty")}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["run", str(path), "--no-export"]) == 2
    err = capsys.readouterr().err
    assert "camsweep run: error: preflight: 2 problem(s)" in err
    assert err.count("\n  - node ") == 2 and "Traceback" not in err
    assert SMP_REPO in err and TV_FILE in err
    assert err.count(f"run `camsweep weights fetch {path}` where there is internet") == 2
    # No run folder, no fold cache, no trial: nothing was computed after the data.
    assert not (tmp_path / "results").exists()
