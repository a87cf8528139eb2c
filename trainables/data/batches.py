"""Where a trial's batches come from: one object for training and evaluation batches, whichever
of the two data paths serves them.

``device`` (the fast path; the default on CUDA): the decoded frames (and CAMs) live on the
training device and whole batches are augmented there. ``loader`` (the default on the CPU):
per-sample albumentations in a DataLoader. Both have the same augmentation semantics, and both
drop a final incomplete training batch, as the authors' loader does: a one-image batch breaks
BatchNorm in train mode (e.g. DeepLabV3+'s ASPP pooling).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader

from trainables.config import TrainConfig
from trainables.data.augment import build_train_transform
from trainables.data.cache import DecodedData
from trainables.data.dataset import SegmentationDataset
from trainables.data.device_loader import DeviceBatches, DeviceData
from trainables.data.splits import FoldSplit


class BatchSource:
    """Training batches (reshuffled and re-augmented per epoch seed) and evaluation batches of
    one fold's splits, on ``device``."""

    def __init__(
        self,
        train: TrainConfig,
        data: DecodedData,
        split: FoldSplit,
        labels: Mapping[int, int],
        cams: np.ndarray | None,
        device: torch.device,
    ):
        self.cfg, self.data, self.split, self.labels, self.cams = train, data, split, labels, cams
        self.device = device
        self.on_device = train.data_path == "device" or (
            train.data_path == "auto" and device.type == "cuda"
        )
        if self.on_device:
            self.device_data = DeviceData.from_decoded(data, device)
            self.train_batches = DeviceBatches(
                self.device_data,
                split.train,
                batch_size=train.batch_size,
                augment=train.augment,
                centre_labels=labels,
                cams=cams,
                shuffle=True,
                drop_last=True,
            )

    def train(self, seed: int) -> Iterable[dict[str, torch.Tensor]]:
        """One epoch of training batches; ``seed`` fixes their order and augmentations."""
        if self.on_device:
            self.train_batches.reseed(seed)
            return self.train_batches
        ds = SegmentationDataset(
            self.data,
            self.split.train,
            build_train_transform(self.cfg.augment, seed=seed),
            centre_labels=self.labels,
            cams=self.cams,
        )
        return self._loader(
            ds, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(seed)
        )

    def eval(self, name: str) -> Iterable[dict[str, torch.Tensor]]:
        """The un-augmented batches of one split (``val``, ``test_in``, ``test_out``)."""
        indices = self.split.indices(name)
        if self.on_device:
            return DeviceBatches(
                self.device_data,
                indices,
                batch_size=self.cfg.batch_size,
                centre_labels=self.labels,
            )
        return self._loader(SegmentationDataset(self.data, indices, centre_labels=self.labels))

    def _loader(self, ds: SegmentationDataset, **kw) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=self.cfg.batch_size,
            num_workers=self.cfg.num_workers,
            # Pinned only when training on a GPU: pinning opens a CUDA context even on the CPU.
            pin_memory=self.device.type == "cuda",
            **kw,
        )
