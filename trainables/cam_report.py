"""How well the binarised CAMs find the extra-anatomical content, and the paper's Figure 1.

On synthetic data the overlay ground truth is known, so CAM localisation is measurable:
precision = |bin ∩ overlay| / |bin| (how much of what is masked is really overlay) and
IoU = |bin ∩ overlay| / |bin ∪ overlay|. Empty denominators count as 1 (nothing masked,
nothing to find).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


@dataclass
class CamScores:
    centre: int
    frames: int
    precision: float
    iou: float
    masked_area: float  # mean fraction of the frame the binary CAM covers


def overlay_scores(
    cams: np.ndarray, overlays: np.ndarray, threshold: float
) -> dict[str, np.ndarray]:
    """Per-frame precision, IoU and masked area of ``cams >= threshold`` against overlays."""
    binary = np.asarray(cams, np.float32) >= threshold
    truth = np.asarray(overlays) > 0
    inter = (binary & truth).sum((1, 2))
    masked = binary.sum((1, 2))
    union = (binary | truth).sum((1, 2))
    return {
        "precision": np.where(masked > 0, inter / np.maximum(masked, 1), 1.0),
        "iou": np.where(union > 0, inter / np.maximum(union, 1), 1.0),
        "masked_area": masked / binary[0].size,
    }


def scores_by_centre(
    cams: np.ndarray, overlays: np.ndarray, centres: np.ndarray, threshold: float
) -> list[CamScores]:
    scores = overlay_scores(cams, overlays, threshold)
    out = []
    for c in sorted(set(centres.tolist())):
        rows = centres == c
        out.append(
            CamScores(
                int(c),
                int(rows.sum()),
                float(scores["precision"][rows].mean()),
                float(scores["iou"][rows].mean()),
                float(scores["masked_area"][rows].mean()),
            )
        )
    return out


def format_scores(scores: list[CamScores], held_out: int) -> str:
    lines = [f"{'centre':>8} {'frames':>6} {'precision':>9} {'IoU':>6} {'masked':>7}"]
    for s in scores:
        name = f"C{s.centre}" + ("*" if s.centre == held_out else "")
        lines.append(
            f"{name:>8} {s.frames:>6} {s.precision:>9.3f} {s.iou:>6.3f} {s.masked_area:>7.3f}"
        )
    lines.append("* held-out centre: the classifier never saw it")
    return "\n".join(lines)


def cam_figure(
    path: Path,
    rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]],
    threshold: float,
) -> None:
    """Writes a Figure-1-style grid: per row an image, its CAM, the binary CAM, the overlay truth.

    Args:
        path: PNG to write.
        rows: (label, image HWC uint8, cam HW float, overlay HW or None) per row.
        threshold: binarisation threshold, shown in the column title.
    """
    with_truth = any(r[3] is not None for r in rows)
    cols = 4 if with_truth else 3
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.2 * cols, 2.2 * len(rows)), squeeze=False)
    titles = ["image", "GradCAM", f"CAM ≥ {threshold:g}", "overlay truth"][:cols]
    for r, (label, image, cam, overlay) in enumerate(rows):
        panels = [image, cam, np.asarray(cam) >= threshold, overlay][:cols]
        for c, panel in enumerate(panels):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if panel is None:
                continue
            if c == 1:
                ax.imshow(image)
                ax.imshow(panel, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            else:
                ax.imshow(panel, cmap=None if c == 0 else "gray", vmin=0, vmax=1 if c else None)
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
        axes[r, 0].set_ylabel(label, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cam_report(
    data, split, fold, runtime, out_png: Path, *, threshold: float
) -> tuple[list[CamScores], np.ndarray]:
    """Scores every centre's CAMs against the overlay truth and writes the figure.

    Training centres use the fold's cached CAMs; the held-out centre's CAMs are computed here
    (the classifier never trained on it, so they show how the cue transfers).

    Returns:
        Per-centre scores (empty without overlay truth) and the CAMs of the held-out centre.
    """
    from trainables.classifier import fold_cams

    classifier = fold.load_classifier(runtime.device)
    # The held-out centre has no label in the fold: its maps explain the prediction.
    held = dataclasses.replace(fold.cam, target="predicted")
    held_cams = fold_cams(classifier, data, split.test_out, runtime, cam=held)
    indices = np.concatenate([fold.train_indices, split.test_out])
    cams = np.concatenate([np.asarray(fold.cams), held_cams])
    centres = data.centres[indices]
    scores = []
    if data.overlays is not None:
        scores = scores_by_centre(cams, data.overlays[indices], centres, threshold)
    rows = []
    for c in sorted(set(centres.tolist())):
        k = int(np.flatnonzero(centres == c)[0])
        i = int(indices[k])
        overlay = None if data.overlays is None else data.overlays[i]
        label = f"C{c}" + (" (held out)" if c == split.held_out else "")
        rows.append((label, np.asarray(data.images[i]), cams[k].astype(np.float32), overlay))
    cam_figure(out_png, rows, threshold)
    return scores, held_cams
