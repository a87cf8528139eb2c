"""The GPU fast path checked without a GPU, so CI covers it: its step loop on a simulated GPU,
and its bf16 numerics with the CPU's autocast.

Under torch's FakeTensorMode tensors carry a device and a shape but no data: a "cuda" tensor needs
no GPU, every op still checks that its inputs share a device, and any op whose result depends on
the data — ``.item()``, ``nonzero``, boolean indexing, i.e. what makes a GPU step wait for the
host — raises ``DataDependentOutputException``. Three things cannot be simulated without a
driver and are stood in for: a CUDA random generator (a CPU one reporting ``cuda``: fake kernels
draw nothing), moving a module (FakeTensorMode cannot swap a module's parameters, so they are
replaced one by one), and the backward pass (the autograd engine starts a device thread, so it is
skipped — and with it online CAMs, which need gradients). bf16 autocast also switches itself off
without a driver. The real-GPU test in tests/test_trial.py (``-m gpu``) covers those.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode

from trainables.config import MaskingConfig, load_trial_config
from trainables.data.augment import AugmentConfig
from trainables.data.batches import BatchSource
from trainables.data.device_loader import DeviceBatches
from trainables.data.splits import leave_one_centre_out
from trainables.engine import Masker, Runtime, evaluate, train_one_epoch
from trainables.models import MODEL_NAMES, build_model

GPU = torch.device("cuda", 0)


class _SimulatedCudaGenerator(torch.Generator):
    """A CPU generator that reports a CUDA device (creating a real one needs a driver)."""

    def __new__(cls, device=None):
        return super().__new__(cls)

    def __init__(self, device=None):
        super().__init__()

    device = property(lambda self: GPU)


def _to_simulated_gpu(module: nn.Module, mode: FakeTensorMode) -> nn.Module:
    """What Runtime.prepare_model does (to the GPU, channels_last), parameter by parameter."""
    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            if p is not None:
                with mode:
                    fake = mode.from_tensor(p.detach()).to(GPU)
                    if fake.dim() == 4:
                        fake = fake.contiguous(memory_format=torch.channels_last)
                sub._parameters[name] = nn.Parameter(fake, requires_grad=p.requires_grad)
        for name, b in list(sub._buffers.items()):
            if b is not None:
                with mode:
                    sub._buffers[name] = mode.from_tensor(b).to(GPU)
    return module


class _Counted:
    """Iterates ``batches`` and records when they ran out."""

    def __init__(self, batches):
        self.batches, self.served, self.exhausted = batches, 0, False

    def __iter__(self):
        for batch in self.batches:
            self.served += 1
            yield batch
        self.exhausted = True


def _first_read(run, batches: _Counted) -> Exception:
    """Runs a pass that must read a value back (fake tensors have none to give) and returns the
    error it stopped at, failing the test if it stopped before the batches ran out."""
    with pytest.raises(Exception) as stop:
        run(batches)
    # A device mismatch or a read inside the loop stops it early.
    assert batches.exhausted, f"stopped at batch {batches.served}: {stop.value!r}"
    return stop.value


@pytest.fixture(scope="module")
def data(synth_decoded):
    return synth_decoded


@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_fast_path_steps_stay_on_the_gpu_and_never_wait_for_it(arch, data, monkeypatch):
    """A trial's training and validation passes on the fast path — the trial's own BatchSource on a
    GPU runtime (frames, CAMs and augmentation on the device), cached-CAM masking, channels_last —
    keep every tensor on the GPU and read no value back until the pass ends: the read at the end
    of an epoch is the first."""
    monkeypatch.setattr(torch, "Generator", _SimulatedCudaGenerator)
    monkeypatch.setattr(torch.Tensor, "backward", lambda self, *a, **kw: None)
    cfg = load_trial_config(None, {"model.arch": arch, "model.variant": "tiny",
                                   "data.image_size": 32, "masking.p": 0.5,
                                   "train.batch_size": 4})  # fmt: skip
    split = leave_one_centre_out(data.centres, data.patients, 3, seed=0)
    labels = split.centre_labels(data.centres)
    cams = np.random.default_rng(0).random((len(split.train), 32, 32)).astype(np.float16)
    runtime = Runtime(GPU, amp=True, channels_last=True)
    mode = FakeTensorMode(allow_non_fake_inputs=True)  # the host-side cache is uploaded inside
    model = _to_simulated_gpu(build_model(arch, variant="tiny"), mode)
    with mode:
        data_path = BatchSource(cfg.train, data, split, labels, cams, runtime.device)
        assert data_path.on_device  # train.data_path auto on a GPU
        assert data_path.device_data.images.device == GPU
        masker = Masker(cfg.masking, generator=torch.Generator(device=GPU))
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        train = _Counted(data_path.train(seed=1))
        stop = _first_read(lambda b: train_one_epoch(model, b, optimizer, runtime,
                                                     masker=masker), train)  # fmt: skip
        assert isinstance(stop, DataDependentOutputException)  # the epoch's loss, read once
        assert train.served == len(split.train) // 4  # complete batches only (drop_last)

        val = _Counted(data_path.eval("val"))
        _first_read(lambda b: evaluate(model, b, runtime), val)  # metrics come back at the end
        assert val.served == -(-len(split.val) // 4)


def test_a_host_wait_inside_the_step_loop_is_caught(data, monkeypatch):
    """The check above can fail: a step that reads its loss back stops at the first batch."""
    monkeypatch.setattr(torch, "Generator", _SimulatedCudaGenerator)
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        batches = _Counted(DeviceBatches(data, np.arange(8), batch_size=4, device=GPU))
        with pytest.raises(DataDependentOutputException):
            for batch in batches:
                float(batch["image"].mean())  # e.g. logging a loss per step
    assert batches.served == 1 and not batches.exhausted


@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_bf16_autocast_trains_like_fp32(arch, data):
    """The fast path's numerics, with the CPU's bf16 autocast standing in for the GPU's: from the
    same seed, an epoch with masking and the device data path (channels_last, bf16) ends where the
    fp32 epoch does, and evaluates alike — no dtype clash in the models, losses or mask_factor."""
    rows = np.arange(16)
    cams = np.random.default_rng(0).random((len(rows), 32, 32)).astype(np.float16)
    results = {}
    for amp in (False, True):
        torch.manual_seed(0)
        runtime = Runtime(torch.device("cpu"), amp=amp, channels_last=True)
        model = runtime.prepare_model(build_model(arch, variant="tiny"))
        batches = DeviceBatches(data, rows, batch_size=4, augment=AugmentConfig(), cams=cams,
                                shuffle=True, seed=1)  # fmt: skip
        masker = Masker(MaskingConfig(p=0.5), generator=torch.Generator().manual_seed(2))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        stats = train_one_epoch(model, batches, optimizer, runtime, masker=masker)
        val = evaluate(model, DeviceBatches(data, rows[:8], batch_size=4), runtime)
        results[amp] = stats, val
    (fp32, fp32_val), (bf16, bf16_val) = results[False], results[True]
    assert bf16.masked_fraction == fp32.masked_fraction > 0
    assert np.isfinite(bf16.loss) and bf16.loss == pytest.approx(fp32.loss, rel=0.02)
    assert bf16_val.loss == pytest.approx(fp32_val.loss, rel=0.05)
