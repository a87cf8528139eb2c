"""Torch dataset over the decoded cache."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from trainables.data.augment import to_chw
from trainables.data.cache import DecodedData


class SegmentationDataset(Dataset):
    """Frames of one split: image, mask, centre label, dataset index and (optionally) the CAM.

    ``transform`` holds the training augmentations (``augment.build_train_transform``); None for
    evaluation. Images are normalised after it (or, with ``normalise: first``, by it: see
    ``augment.to_chw``), in both cases.

    Items are dicts of tensors: ``image`` (3, S, S) float normalised, ``mask`` (1, S, S) float
    {0, 1}, ``label`` long (contiguous centre label; -1 for centres outside ``centre_labels``, e.g.
    the held-out one), ``index`` long (row in the decoded cache) and, when ``cams`` is given,
    ``cam`` (1, S, S) float in [0, 1], transformed with the image. ``cams`` is aligned with
    ``indices`` (row k is the CAM of frame ``indices[k]``), as a fold stores its training CAMs.
    """

    def __init__(
        self,
        data: DecodedData,
        indices: Sequence[int] | np.ndarray,
        transform: A.Compose | None = None,
        *,
        centre_labels: Mapping[int, int] | None = None,
        cams: np.ndarray | None = None,
    ):
        self.data = data
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform
        self.centre_labels = dict(centre_labels or {})
        if cams is not None and len(cams) != len(self.indices):
            raise ValueError(f"cams has {len(cams)} rows for {len(self.indices)} frames")
        self.cams = cams

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        i = int(self.indices[item])
        inputs = {"image": np.asarray(self.data.images[i]), "mask": np.asarray(self.data.masks[i])}
        if self.cams is not None:
            inputs["cam"] = np.asarray(self.cams[item], dtype=np.float32)
        out = self.transform(**inputs) if self.transform is not None else inputs
        sample = {
            "image": torch.from_numpy(to_chw(out["image"])),
            "mask": torch.from_numpy(out["mask"].astype(np.float32))[None],
            "label": torch.tensor(self.centre_labels.get(int(self.data.centres[i]), -1)),
            "index": torch.tensor(i),
        }
        if self.cams is not None:
            sample["cam"] = torch.from_numpy(np.ascontiguousarray(out["cam"], np.float32))[None]
        return sample
