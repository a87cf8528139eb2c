"""Device-resident batches: the decoded cache lives on the training device, batches are gathered
and augmented there.

A drop-in replacement for ``DataLoader(SegmentationDataset(...))``: it yields the same batch dicts
(see :class:`trainables.data.dataset.SegmentationDataset`), but a batch costs one gather and a few
batched tensor ops on the device instead of per-item albumentations calls on CPU workers and a
host→device copy per step.

Typical use in a trial: upload the dataset once with :meth:`DeviceData.from_decoded`, build one
:class:`DeviceBatches` per split, and call :meth:`DeviceBatches.reseed` at the start of every
training epoch so a resumed trial replays the same shuffles and augmentations.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from trainables.data.augment import AugmentConfig
from trainables.data.batch_augment import BatchAugment, normalize
from trainables.data.cache import DecodedData

_UPLOAD_CHUNK = 256  # frames per host→device copy: bounds the host copy of a memory-mapped cache


@dataclass(frozen=True)
class DeviceData:
    """The decoded frames as uint8 tensors on one device (shared by every split of a trial).

    Attributes:
        images: (N, 3, S, S) uint8 RGB, channels first.
        masks: (N, 1, S, S) uint8 {0, 1}.
        centres: (N,) int64 PolypGen centre numbers, on the host (labels are mapped per split).
    """

    images: Tensor
    masks: Tensor
    centres: np.ndarray

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __len__(self) -> int:
        return self.images.shape[0]

    @classmethod
    def from_decoded(cls, data: DecodedData, device: torch.device | str = "cpu") -> DeviceData:
        """Copies the decoded cache to ``device`` once, in chunks."""
        n, s = len(data), data.image_size
        images = torch.empty((n, 3, s, s), dtype=torch.uint8, device=device)
        masks = torch.empty((n, 1, s, s), dtype=torch.uint8, device=device)
        for start in range(0, n, _UPLOAD_CHUNK):
            stop = min(start + _UPLOAD_CHUNK, n)
            # np.array copies: the cache is a read-only memmap, which torch cannot wrap.
            chunk = torch.from_numpy(np.array(data.images[start:stop])).to(device)
            images[start:stop] = chunk.permute(0, 3, 1, 2)
            masks[start:stop, 0] = torch.from_numpy(np.array(data.masks[start:stop])).to(device)
        return cls(images, masks, np.asarray(data.centres, dtype=np.int64))


class DeviceBatches:
    """Batches of one split, gathered and (for training) augmented on the data's device.

    Yields dicts with ``image`` (B, 3, S, S) float32 ImageNet-normalised, ``mask`` (B, 1, S, S)
    float32 {0, 1}, ``label`` (B,) long (contiguous centre label, -1 for centres outside
    ``centre_labels``), ``index`` (B,) long (row in the decoded cache) and, when ``cams`` is
    given, ``cam`` (B, 1, S, S) float32 — all on the data's device.

    Args:
        data: the decoded dataset, or a :class:`DeviceData` already uploaded (share one between
            splits so the frames are on the device once).
        indices: rows of the decoded cache in this split.
        batch_size: frames per batch; the last batch may be smaller unless ``drop_last``.
        augment: training augmentations; None applies normalisation only (evaluation).
        centre_labels: PolypGen centre number → contiguous label.
        cams: CAMs aligned with ``indices`` (row k belongs to frame ``indices[k]``), shape
            (n, S, S) or (n, 1, S, S), in [0, 1]; kept on the device in their own dtype.
        shuffle: a new random order each pass (from the seeded generator).
        seed: seeds the generator behind shuffling and augmentation.
        drop_last: drop a final incomplete batch.
        device: where to upload ``data`` when it is a :class:`DecodedData` (default CPU).
    """

    def __init__(
        self,
        data: DecodedData | DeviceData,
        indices: Sequence[int] | np.ndarray,
        *,
        batch_size: int,
        augment: AugmentConfig | None = None,
        centre_labels: Mapping[int, int] | None = None,
        cams: np.ndarray | Tensor | None = None,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        device: torch.device | str | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(data, DecodedData):
            data = DeviceData.from_decoded(data, device or "cpu")
        elif device is not None and not _same_device(torch.device(device), data.device):
            raise ValueError(f"data is on {data.device}, not on the requested {device}")
        rows = np.asarray(indices, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(data)):
            raise ValueError(
                f"indices must lie in [0, {len(data)}), got {rows.min()}..{rows.max()}"
            )
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.augment = None if augment is None else BatchAugment(augment)
        dev = data.device
        self.rows = torch.tensor(rows, device=dev)
        labels = dict(centre_labels or {})
        self.labels = torch.tensor(
            [labels.get(int(c), -1) for c in data.centres[rows]], dtype=torch.long, device=dev
        )
        self.cams = None if cams is None else self._upload_cams(cams, len(rows))
        self.generator = torch.Generator(device=dev)
        self.reseed(seed)

    def _upload_cams(self, cams: np.ndarray | Tensor, n: int) -> Tensor:
        if len(cams) != n:
            raise ValueError(f"cams has {len(cams)} rows for {n} frames")
        if isinstance(cams, np.ndarray):
            cams = torch.from_numpy(np.array(cams))
        cams = cams.to(self.data.device)
        if cams.dim() == 3:
            cams = cams.unsqueeze(1)
        size = tuple(self.data.images.shape[-2:])
        if cams.dim() != 4 or cams.shape[1] != 1 or tuple(cams.shape[-2:]) != size:
            raise ValueError(f"cams must be (n, {size[0]}, {size[1]}), got {tuple(cams.shape)}")
        return cams

    def reseed(self, seed: int) -> None:
        """Restarts the random stream: the next pass has the order and augmentations of ``seed``."""
        self.generator.manual_seed(seed)

    @property
    def num_frames(self) -> int:
        return len(self.rows)

    def __len__(self) -> int:
        n, b = self.num_frames, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        n, dev = self.num_frames, self.data.device
        if self.shuffle:
            # argsort of uniforms rather than randperm: it stays on the device for every n.
            order = torch.rand(n, generator=self.generator, device=dev).argsort()
        else:
            order = torch.arange(n, device=dev)
        for b in range(len(self)):
            pos = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield self._batch(pos)

    def _batch(self, pos: Tensor) -> dict[str, Tensor]:
        rows = self.rows[pos]
        images = self.data.images.index_select(0, rows)
        masks = self.data.masks.index_select(0, rows)
        cams = None if self.cams is None else self.cams.index_select(0, pos)
        if self.augment is not None:
            image, mask, cam = self.augment(images, masks, cams, self.generator)
        else:
            image, mask = normalize(images), masks.float()
            cam = None if cams is None else cams.float()
        batch = {"image": image, "mask": mask, "label": self.labels[pos], "index": rows}
        if cam is not None:
            batch["cam"] = cam
        return batch


def _same_device(requested: torch.device, actual: torch.device) -> bool:
    # "cuda" (no index) means the current GPU; DeviceData tensors always carry an index.
    index = requested.index
    return requested.type == actual.type and (index is None or index == actual.index)
