"""Per-fold preparation: train the centre classifier, then cache the CAMs of the training split.

A fold's artefacts depend only on (dataset content, held-out centre, split seed, classifier
config incl. its seed, CAM target, image size), so they are cached on disk under that key and every trial
of the fold — in this sweep or a later one — reuses them. The classifier must never see the
held-out centre: :func:`assert_fold_isolated` checks it before training.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from trainables.cache_folder import load_or_build, load_sealed
from trainables.checkpoint import load_checkpoint, save_checkpoint
from trainables.config import PAPER_CAM, CamChoice, ClassifierConfig
from trainables.data.augment import AugmentConfig, build_train_transform
from trainables.data.cache import DecodedData
from trainables.data.dataset import SegmentationDataset
from trainables.data.splits import FoldSplit
from trainables.engine import Runtime, seed_everything
from trainables.models import CentreClassifier, build_centre_classifier

FOLD_FORMAT = 1
# classifier.augment "flips": rotation's black corners would look like the octagonal/circular
# borders that distinguish some centres, teaching the classifier a cue that the augmentation
# itself created.
FLIPS_ONLY = AugmentConfig(rotate_p=0.0, color_jitter_p=0.0)
SEGMENTATION_AUGMENT = AugmentConfig()  # train.augment's defaults


def classifier_augment(cfg: ClassifierConfig, segmentation: AugmentConfig) -> AugmentConfig:
    """The classifier's training augmentations: flips only, or the trial's own segmentation
    augmentations (``train.augment``), as the released code trains it."""
    return FLIPS_ONLY if cfg.augment == "flips" else segmentation


class FoldLeakError(AssertionError):
    """The held-out centre reached the classifier's training data."""


def assert_fold_isolated(data: DecodedData, split: FoldSplit) -> None:
    leaked = np.flatnonzero(data.centres[split.train] == split.held_out)
    if len(leaked):
        raise FoldLeakError(
            f"{len(leaked)} training frame(s) of held-out centre C{split.held_out} in the "
            f"classifier's training split (e.g. {data.names[split.train[leaked[0]]]})"
        )


@dataclass
class FoldArtifacts:
    """What every segmentation trial of one fold shares."""

    key: str
    held_out: int
    centre_labels: dict[int, int]
    train_indices: np.ndarray  # rows of the decoded cache, aligned with `cams`
    cams: np.ndarray  # (n_train, S, S) float16 in [0, 1], CAMs of the un-augmented images
    metrics: dict[str, float]  # classifier train/val accuracy
    path: Path  # folder holding classifier.pt, cams.npy, meta.json
    cam: CamChoice = PAPER_CAM  # how `cams` were computed (and any further CAM of the fold)

    def load_classifier(self, device: torch.device | str = "cpu") -> CentreClassifier:
        payload = load_checkpoint(self.path / "classifier.pt")
        model = build_centre_classifier(len(self.centre_labels), arch=payload["arch"])
        model.load_state_dict(payload["model"])
        return model.to(device).eval().requires_grad_(False)


def fold_key(
    data: DecodedData,
    split: FoldSplit,
    cfg: ClassifierConfig,
    cam: CamChoice,
    augment: AugmentConfig = SEGMENTATION_AUGMENT,
) -> str:
    """The fold cache's key: everything the classifier and its CAMs depend on (``augment`` is
    the segmentation augmentations, which ``classifier.augment: segmentation`` trains with)."""
    parts = {
        "format": FOLD_FORMAT,
        "dataset": data.dataset_hash,
        "image_size": data.image_size,
        "held_out": split.held_out,
        "split_seed": split.seed,
        # The frames themselves: two split schemes with one seed train different classifiers.
        "train": hashlib.sha256(np.ascontiguousarray(split.train, np.int64).data).hexdigest(),
        "classifier": cfg.model_dump(mode="json"),
        "cam": asdict(cam),
        "augment": classifier_augment(cfg, augment).model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _accuracy(model: nn.Module, loader: DataLoader, runtime: Runtime) -> float:
    model.eval()
    correct, total = torch.zeros((), dtype=torch.long, device=runtime.device), 0
    with torch.no_grad():
        for batch in loader:
            batch = runtime.to_device(batch)
            with runtime.autocast():
                logits = model(batch["image"])
            correct += (logits.argmax(1) == batch["label"]).sum()  # on the device: no wait
            total += len(batch["label"])
    return correct.item() / max(total, 1)


def train_centre_classifier(
    data: DecodedData,
    split: FoldSplit,
    cfg: ClassifierConfig,
    runtime: Runtime,
    augment: AugmentConfig = SEGMENTATION_AUGMENT,
) -> tuple[CentreClassifier, dict[str, float]]:
    """Cross-entropy training on the fold's training split; accuracy on train and val.
    ``augment``: the segmentation augmentations (see :func:`classifier_augment`)."""
    assert_fold_isolated(data, split)
    seed = cfg.seed
    seed_everything(seed)
    labels = split.centre_labels(data.centres)
    model = runtime.prepare_model(
        build_centre_classifier(len(labels), arch=cfg.arch, weights=cfg.weights)
    )
    train_set = SegmentationDataset(
        data,
        split.train,
        build_train_transform(classifier_augment(cfg, augment), seed=seed),
        centre_labels=labels,
    )
    if len(train_set) < cfg.batch_size:
        raise ValueError(
            f"held-out centre C{split.held_out}: {len(train_set)} training frames, fewer than "
            f"classifier.batch_size {cfg.batch_size} — no complete batch to train the classifier"
        )
    generator = torch.Generator().manual_seed(seed)
    # drop_last: a one-image batch breaks BatchNorm in train mode.
    loader = DataLoader(
        train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=True, generator=generator
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    loss_fn = nn.CrossEntropyLoss()

    def eval_loader(indices: np.ndarray) -> DataLoader:
        ds = SegmentationDataset(data, indices, centre_labels=labels)
        return DataLoader(ds, batch_size=cfg.batch_size)

    by_val = cfg.select == "best_val_accuracy" and len(split.val)
    best_accuracy, best_epoch, best_state = -1.0, 0, None
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        for batch in loader:
            batch = runtime.to_device(batch)
            with runtime.autocast():
                loss = loss_fn(model(batch["image"]).float(), batch["label"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if by_val:
            accuracy = _accuracy(model, eval_loader(split.val), runtime)
            if accuracy > best_accuracy:  # the first of equal epochs, as a checkpoint callback
                best_accuracy, best_epoch = accuracy, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    metrics: dict[str, float] = {"selected_epoch": float(cfg.epochs)}
    if best_state is not None:
        model.load_state_dict(best_state)
        metrics["selected_epoch"] = float(best_epoch)
    metrics["train_accuracy"] = _accuracy(model, eval_loader(split.train), runtime)
    if best_state is not None:  # the kept weights' validation accuracy is already known
        metrics["val_accuracy"] = best_accuracy
    elif len(split.val):
        metrics["val_accuracy"] = _accuracy(model, eval_loader(split.val), runtime)
    return model.eval(), metrics


def fold_cams(
    model: CentreClassifier,
    data: DecodedData,
    indices: np.ndarray,
    runtime: Runtime,
    *,
    cam: CamChoice = PAPER_CAM,
    centre_labels: dict[int, int] | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """CAMs of the un-augmented frames `indices`, (n, S, S) float16, batched on the device.

    ``cam`` says which map; its target is the classifier's prediction, or the true centre
    (``centre_labels`` then gives each frame's label).
    """
    if cam.target == "true" and centre_labels is None:
        raise ValueError("CAMs of the true centre need the fold's centre labels")
    ds = SegmentationDataset(data, indices, centre_labels=centre_labels)
    model = model.to(runtime.device).eval()
    out = np.empty((len(ds), data.image_size, data.image_size), np.float16)
    row = 0
    with model.explainer(cam.attribution, cam.input, cam.layer) as gradcam:
        for batch in DataLoader(ds, batch_size=batch_size):
            batch = runtime.to_device(batch)
            target = batch["label"] if cam.target == "true" else None
            cams = gradcam(batch["image"], target=target)
            out[row : row + len(cams)] = cams[:, 0].to(torch.float16).cpu().numpy()
            row += len(cams)
    return out


def prepare_fold(
    data: DecodedData,
    split: FoldSplit,
    cfg: ClassifierConfig,
    runtime: Runtime,
    cache_root: Path,
    *,
    cam: CamChoice = PAPER_CAM,
    augment: AugmentConfig = SEGMENTATION_AUGMENT,
) -> tuple[FoldArtifacts, bool]:
    """Loads the fold's artefacts from ``cache_root`` or computes and stores them (``augment``:
    the trial's segmentation augmentations, for ``classifier.augment: segmentation``).

    Returns:
        The artefacts and whether they were reused from the cache.
    """
    key = fold_key(data, split, cfg, cam, augment)
    path = fold_cache_entry(cache_root, split.held_out, key)

    def build(folder: Path) -> None:
        start = time.perf_counter()
        model, metrics = train_centre_classifier(data, split, cfg, runtime, augment)
        labels = split.centre_labels(data.centres)
        cams = fold_cams(model, data, split.train, runtime, cam=cam, centre_labels=labels)
        metrics["seconds"] = time.perf_counter() - start
        save_checkpoint(
            folder / "classifier.pt",
            {"model": model.cpu().state_dict(), "arch": cfg.arch, "centre_labels": labels},
        )
        np.save(folder / "cams.npy", cams)
        np.save(folder / "train_indices.npy", split.train)
        meta = {
            "key": key,
            "held_out": split.held_out,
            "centre_labels": {str(c): i for c, i in labels.items()},
            "dataset_hash": data.dataset_hash,
            "classifier": cfg.model_dump(mode="json"),
            "cam": asdict(cam),
            "metrics": metrics,
        }
        (folder / "meta.json").write_text(json.dumps(meta, indent=2))

    # Concurrent sweeps that need this fold train it once: the other waits, then reuses it.
    return load_or_build(path, build, load_fold, f"fold cache C{split.held_out}")


def fold_cache_entry(cache_root: Path, held_out: int, key: str) -> Path:
    """The fold cache's folder of one fold's artefacts (``key``: its `fold_key`)."""
    return Path(cache_root).expanduser() / f"C{held_out}-{key}"


def cached_fold(entry: Path) -> FoldArtifacts | None:
    """The artefacts of a whole, sealed cache entry; None when it is missing or damaged (then
    `prepare_fold` reports and rebuilds it)."""
    try:
        return load_sealed(entry, load_fold, "fold cache")
    except ValueError:
        return None


def load_fold(path: Path) -> FoldArtifacts:
    meta = json.loads((path / "meta.json").read_text())
    return FoldArtifacts(
        key=meta["key"],
        held_out=meta["held_out"],
        centre_labels={int(c): i for c, i in meta["centre_labels"].items()},
        train_indices=np.load(path / "train_indices.npy"),
        cams=np.load(path / "cams.npy", mmap_mode="r"),
        metrics=meta["metrics"],
        path=path,
        cam=CamChoice(**meta["cam"]),
    )
