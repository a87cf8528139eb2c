"""Example panels of a trained trial: input, CAM, binarised CAM, masked input, truth, prediction.

Returned as plain uint8 arrays (one strip per frame) so any tracker can log them.
"""

from __future__ import annotations

import numpy as np
import torch

from trainables.cam import MASK_MODES, binarize
from trainables.classifier import FoldArtifacts
from trainables.config import TrialConfig
from trainables.data.augment import denormalize
from trainables.data.cache import DecodedData
from trainables.data.dataset import SegmentationDataset
from trainables.engine import Runtime
from trainables.models.base import SegmentationNet

PANELS = ("input", "cam", "cam_binary", "masked_input", "truth", "prediction")


def _rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat((np.clip(gray, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)


def _heat(cam: np.ndarray) -> np.ndarray:
    # A small blue→red ramp keeps this free of matplotlib colormaps.
    c = np.clip(cam, 0, 1)[..., None]
    return (np.concatenate([c, 1 - np.abs(2 * c - 1), 1 - c], axis=2) * 255).astype(np.uint8)


@torch.no_grad()
def example_strips(
    cfg: TrialConfig,
    model: SegmentationNet,
    data: DecodedData,
    indices: np.ndarray,
    runtime: Runtime,
    fold: FoldArtifacts | None,
) -> list[np.ndarray]:
    """One (S, 6·S, 3) strip per frame in ``indices``, panels in the order of ``PANELS``.

    Without fold artefacts (the baseline) the CAM panels are blank and the masked input equals
    the input.
    """
    ds = SegmentationDataset(data, indices)
    batch = {k: v.to(runtime.device) for k, v in next(iter(_batches(ds))).items()}
    model.eval()
    probs = torch.sigmoid(model(batch["image"])["logits"].float())
    if fold is not None:
        classifier = fold.load_classifier(runtime.device)
        with classifier.explainer(fold.cam.attribution, fold.cam.input, fold.cam.layer) as explain:
            cams = explain(batch["image"])
    else:
        cams = torch.zeros_like(probs)
    binary = binarize(cams, cfg.masking.threshold)
    factor = MASK_MODES[cfg.masking.mode](binary)
    if fold is None:
        factor = torch.ones_like(factor)
    strips = []
    for i in range(len(ds)):
        image = batch["image"][i].float().cpu().numpy()
        panels = [
            denormalize(image),
            _heat(cams[i, 0].cpu().numpy()),
            _rgb(binary[i, 0].cpu().numpy()),
            denormalize(image * factor[i].cpu().numpy()),  # what UNet/DeepLabV3+ see
            _rgb(batch["mask"][i, 0].cpu().numpy()),
            _rgb((probs[i, 0] > 0.5).float().cpu().numpy()),
        ]
        strips.append(np.concatenate(panels, axis=1))
    return strips


def _batches(ds: SegmentationDataset):
    yield {k: torch.stack([ds[i][k] for i in range(len(ds))]) for k in ("image", "mask")}
