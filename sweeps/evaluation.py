"""`camsweep evaluate`: an exported model (fold ensemble or one fold) scored on a labelled
dataset, per dataset/centre, with bootstrap confidence intervals.

Metrics follow training's conventions (``trainables.metrics``: probability > 0.5, a 0 / 0 ratio
is 1, the mean over images). ``resolution="model"`` scores at the training resolution — frame and
mask resized as the decoded cache resizes them, so a fold's own out-of-distribution centre
reproduces the sweep's ``test_out`` scores; ``"original"`` resizes the probabilities to each
frame's own size and scores against the full-resolution mask, as a clinician would see it.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sweeps.stats import N_BOOT, bootstrap_mean
from trainables import metric_keys as K
from trainables.data.polypgen import DatasetError, Record

RESOLUTIONS = ("model", "original")
ALL = "all"


@dataclass
class GroupScores:
    """One dataset/centre: per-image metrics of its frames."""

    name: str
    images: list[str] = field(default_factory=list)
    per_image: dict[str, list[float]] = field(
        default_factory=lambda: {m: [] for m in K.METRIC_NAMES}
    )


@dataclass
class Evaluation:
    model: str  # e.g. "unet: C2 seed 0, C6 seed 0"
    data: str
    resolution: str
    n_boot: int
    groups: list[GroupScores]
    notes: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)  # filled by `summarise`

    def summarise(self, seed: int = 0) -> None:
        everything = GroupScores(ALL)
        for g in self.groups:
            everything.images += g.images
            for m in K.METRIC_NAMES:
                everything.per_image[m] += g.per_image[m]
        self.rows = []
        for g in [*self.groups, *([everything] if len(self.groups) > 1 else [])]:
            row = {"dataset": g.name, "images": len(g.images)}
            for m in K.METRIC_NAMES:
                mean, low, high = bootstrap_mean(g.per_image[m], n_boot=self.n_boot, seed=seed)
                row |= {m: mean, f"{m}_ci_low": low, f"{m}_ci_high": high}
            self.rows.append(row)

    def markdown(self) -> str:
        header = ["dataset", "images", *K.METRIC_NAMES]
        lines = [
            f"# {self.model} on {self.data}",
            "",
            f"Mean over images at the {self.resolution} resolution, with 95 % percentile "
            f"bootstrap intervals over images ({self.n_boot} resamples); probability > 0.5.",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        for r in self.rows:
            cells = [
                f"{r[m]:.4f} [{r[f'{m}_ci_low']:.4f}, {r[f'{m}_ci_high']:.4f}]"
                for m in K.METRIC_NAMES
            ]
            lines.append(f"| {r['dataset']} | {r['images']} | " + " | ".join(cells) + " |")
        lines += ["", *(f"Note: {n}" for n in self.notes)] if self.notes else []
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(self.rows[0]))
        writer.writeheader()
        writer.writerows(self.rows)
        return buf.getvalue()

    def per_image_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["dataset", "image", *K.METRIC_NAMES])
        for g in self.groups:
            for i, name in enumerate(g.images):
                writer.writerow([g.name, name, *(g.per_image[m][i] for m in K.METRIC_NAMES)])
        return buf.getvalue()


def check_pairs(records: list[Record]) -> list[str]:
    """Frames whose image or mask is unreadable, or whose sizes differ — from the headers, before
    any model runs."""
    from trainables.data.decode import DecodeError, image_size_of

    problems = []
    for r in records:
        try:
            image_wh, mask_wh = image_size_of(r.image), image_size_of(r.mask)
        except DecodeError as exc:
            problems.append(str(exc))
            continue
        if image_wh != mask_wh:
            problems.append(f"{r.mask}: mask size {mask_wh} differs from image size {image_wh}")
    return problems


def _score_batch(ensemble, records: list[Record], resolution: str) -> dict[str, np.ndarray]:
    import torch

    from trainables.data.decode import read_image, read_mask
    from trainables.inference import to_frame_size
    from trainables.metrics import per_image_metrics

    size = ensemble.image_size
    images = np.stack([read_image(r.image, size) for r in records])
    probs = ensemble.probabilities(images)
    if resolution == "model":
        masks = np.stack([read_mask(r.mask, size) for r in records])
        scores = per_image_metrics(
            torch.from_numpy(probs)[:, None], torch.from_numpy(masks)[:, None]
        )
        return {m: v.numpy() for m, v in scores.items()}
    out: dict[str, list[float]] = {m: [] for m in K.METRIC_NAMES}
    for r, p in zip(records, probs):
        mask = read_mask(r.mask)
        full = to_frame_size(p, mask.shape[1], mask.shape[0])
        scores = per_image_metrics(
            torch.from_numpy(full)[None, None], torch.from_numpy(mask)[None, None]
        )
        for m in K.METRIC_NAMES:
            out[m].append(float(scores[m][0]))
    return {m: np.asarray(v) for m, v in out.items()}


def evaluate_model(
    model_dir: Path | str,
    data_root: Path | str,
    *,
    layout: str = "auto",
    folds: list[int] | None = None,
    resolution: str = "model",
    batch_size: int = 8,
    device: str = "auto",
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> Evaluation:
    """Scores a model folder on every frame of a labelled dataset, grouped by dataset/centre.

    Raises:
        ModelFolderError, DatasetError, ValueError: before any frame is scored.
    """
    from trainables.data.layouts import scan_layout
    from trainables.inference import Ensemble

    if resolution not in RESOLUTIONS:
        raise ValueError(f"--resolution {resolution!r}: valid: {', '.join(RESOLUTIONS)}")
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size}: must be at least 1")
    ensemble = Ensemble.load(model_dir, folds, device)
    dataset, problems = scan_layout(Path(data_root).expanduser(), layout)
    problems = problems or check_pairs(dataset.records)
    if problems:
        raise DatasetError(problems)
    groups = []
    for centre in dataset.centres:
        records = [r for r in dataset.records if r.centre == centre]
        group = GroupScores(dataset.centre_name(centre))
        for start in range(0, len(records), batch_size):
            chunk = records[start : start + batch_size]
            scores = _score_batch(ensemble, chunk, resolution)
            group.images += [r.image.name for r in chunk]
            for m in K.METRIC_NAMES:
                group.per_image[m] += scores[m].tolist()
        groups.append(group)
    names = ", ".join(m.name for m in ensemble.members)
    evaluation = Evaluation(
        f"{ensemble.manifest.arch} ({names})",
        str(dataset.root),
        resolution,
        n_boot,
        groups,
        notes=_seen_in_training(ensemble, dataset),
    )
    evaluation.summarise(seed)
    return evaluation


def _seen_in_training(ensemble, dataset) -> list[str]:
    """A warning when the dataset is the one the members were trained on: only a member's own
    held-out centre gives out-of-distribution scores (its other centres' frames include its
    training, validation and in-distribution test frames)."""
    from trainables.config import TrialConfig
    from trainables.data.source import synthetic_root

    roots = set()
    for member in ensemble.members:
        data = TrialConfig.model_validate(ensemble.manifest.member_config(member)).data
        root = synthetic_root(data) if data.source == "synthetic" else data.root
        if root is not None:
            roots.add(Path(root).expanduser().resolve())
    if Path(dataset.root).resolve() not in roots:
        return []
    folds = ", ".join(f"{m.name} holds out C{m.fold}" for m in ensemble.members)
    return [
        f"this is the dataset the models were trained on ({folds}): only a model's own held-out "
        "centre is out-of-distribution for it (pass --folds C<k> and read row C<k>, which equals "
        "the sweep's test_out scores); the other rows include frames it trained on"
    ]
