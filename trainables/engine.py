"""One epoch of training and one evaluation pass — plain functions, no Ray, no W&B.

The paper's CAM-guided masking enters here as an :class:`Masker`: per batch it turns the CAM
(cached with the sample, or recomputed online from the frozen centre classifier) into the
multiplicative mask_factor factor that the model applies to its input (UNet, DeepLabV3+) or to its
anatomy representation (SDNet).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from trainables.cam import masking_factor
from trainables.config import MaskingConfig, TrainConfig
from trainables.metrics import MetricAccumulator
from trainables.models.base import SegmentationNet
from trainables.models.centre_classifier import CentreClassifier


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Runtime:
    """Where and how tensors are computed: device, bf16 autocast, memory format."""

    device: torch.device
    amp: bool = False
    channels_last: bool = False

    @classmethod
    def from_config(cls, cfg: TrainConfig, *, granted_gpus: float | None = None) -> Runtime:
        """``granted_gpus``: the GPU share Ray granted this task (None outside Ray). A task granted
        no GPU runs on the CPU even on a GPU node: Ray leaves CUDA_VISIBLE_DEVICES unset for
        zero-GPU tasks, so it would otherwise see every GPU and pile onto cuda:0 unreserved."""
        cuda = torch.cuda.is_available() and (granted_gpus is None or granted_gpus > 0)
        if cfg.device == "cuda" and not cuda:
            raise ValueError(
                "train.device: 'cuda' requested but CUDA is not available"
                + (" (Ray granted this task no GPU)" if granted_gpus == 0 else "")
            )
        device = torch.device(
            "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and cuda) else "cpu"
        )
        on_gpu = device.type == "cuda"
        if cfg.amp == "on" and not on_gpu:
            raise ValueError("train.amp: 'on' needs CUDA (bf16 autocast is used on GPUs only)")
        # Pre-Ampere GPUs (V100, T4) only emulate bf16, slower than fp32: auto leaves AMP off.
        amp = cfg.amp == "on" or (
            cfg.amp == "auto" and on_gpu and torch.cuda.is_bf16_supported(including_emulation=False)
        )
        return cls(device, amp=amp, channels_last=on_gpu)

    def __post_init__(self) -> None:
        if self.device.type == "cuda":
            # Input sizes are fixed within a trial, so cuDNN's per-shape algorithm search pays
            # for itself after the first steps.
            torch.backends.cudnn.benchmark = True

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def to_device(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if self.channels_last:
            out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
        return out

    def prepare_model(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model


class Masker:
    """Produces the per-batch mask_factor factor from CAMs.

    ``cam_mode="cached"`` reads ``batch["cam"]`` (the fold's CAMs of the un-augmented images,
    transformed with the image). ``"online"`` recomputes GradCAM on the augmented batch with the
    frozen classifier (target: its prediction, or the true centre label).
    """

    def __init__(
        self,
        masking: MaskingConfig,
        *,
        generator: torch.Generator,
        classifier: CentreClassifier | None = None,
    ):
        if masking.cam_mode == "online" and classifier is None:
            raise ValueError("masking.cam_mode 'online' needs the fold's centre classifier")
        self.masking = masking
        self.generator = generator
        self.classifier = classifier

    def cams(self, batch: dict[str, Tensor]) -> Tensor:
        if self.masking.cam_mode == "cached":
            if "cam" not in batch:
                raise ValueError("masking.cam_mode 'cached' but the batch carries no CAM")
            return batch["cam"]
        m = self.masking
        target = batch["label"] if m.cam_target == "true" else None
        with self.classifier.explainer(m.attribution, m.cam_input, m.cam_layer) as explain:
            return explain(batch["image"], target=target)

    def __call__(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(factor (B,1,H,W), selected (B,) bool)."""
        m = self.masking
        return masking_factor(
            self.cams(batch),
            threshold=m.threshold,
            p=m.p,
            mode=m.mode,
            draw=m.draw,
            generator=self.generator,
        )


@dataclass
class EpochStats:
    loss: float
    parts: dict[str, float]
    masked_fraction: float
    masked_pixels: float
    images: int
    seconds: float


def train_one_epoch(
    model: SegmentationNet,
    loader: Iterable[dict[str, Tensor]],
    optimizer: torch.optim.Optimizer,
    runtime: Runtime,
    *,
    masker: Masker | None = None,
) -> EpochStats:
    """Trains one pass over ``loader``; raises :class:`DivergedError` on a non-finite loss."""
    model.train()
    start = time.perf_counter()
    # Sums stay on the device: no host sync per step (it stalls the GPU queue).
    loss_sum = torch.zeros((), device=runtime.device)
    part_sums: dict[str, Tensor] = {}
    masked = torch.zeros((), device=runtime.device)
    masked_px = torch.zeros((), device=runtime.device)
    images = 0
    for batch in loader:
        batch = runtime.to_device(batch)
        x, y = batch["image"], batch["mask"]
        mask_factor = None
        if masker is not None and masker.masking.masks:
            mask_factor, selected = masker(batch)
            masked += selected.sum()
            masked_px += (1 - mask_factor).float().mean() * x.shape[0]
        with runtime.autocast():
            out = model(x, mask_factor)
            loss, parts = model.loss(out, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n = x.shape[0]
        images += n
        loss_sum += loss.detach().float() * n
        for k, v in parts.items():
            part_sums[k] = part_sums.get(k, 0) + v.detach().float() * n
    total = loss_sum.item()
    if not np.isfinite(total):
        raise DivergedError(f"training loss is {total} (diverged)")
    return EpochStats(
        loss=total / max(images, 1),
        parts={k: float(v) / max(images, 1) for k, v in part_sums.items()},
        masked_fraction=float(masked) / max(images, 1),
        masked_pixels=float(masked_px) / max(images, 1),
        images=images,
        seconds=time.perf_counter() - start,
    )


@dataclass
class EvalResult:
    """Metrics of one split: mean over images, pooled over pixels, and per image."""

    mean: dict[str, float]
    pooled: dict[str, float]
    per_image: dict[str, np.ndarray]
    indices: np.ndarray  # dataset rows, aligned with per_image
    loss: float


@torch.no_grad()
def evaluate(
    model: SegmentationNet, loader: Iterable[dict[str, Tensor]], runtime: Runtime
) -> EvalResult:
    """Evaluates without masking; metrics at polyp probability > 0.5 (see trainables.metrics)."""
    was_training = model.training
    model.eval()
    acc = MetricAccumulator()
    indices: list[Tensor] = []
    loss_sum, images = torch.zeros((), device=runtime.device), 0
    try:
        for batch in loader:
            batch = runtime.to_device(batch)
            with runtime.autocast():
                out = model(batch["image"])
                loss, _ = model.loss(out, batch["image"], batch["mask"])
            acc.update(torch.sigmoid(out["logits"].float()), batch["mask"])
            indices.append(batch["index"])
            loss_sum += loss.float() * batch["image"].shape[0]
            images += batch["image"].shape[0]
    finally:
        model.train(was_training)
    if images == 0:
        raise ValueError("evaluate() got an empty split")
    return EvalResult(
        mean=acc.mean(),
        pooled=acc.pooled(),
        per_image=acc.per_image(),
        indices=torch.cat(indices).cpu().numpy(),
        loss=loss_sum.item() / images,
    )
