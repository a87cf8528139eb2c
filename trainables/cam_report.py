"""How well the binarised CAMs find the extra-anatomical content, and the paper's Figure 1.

On synthetic data the overlay ground truth is known, so CAM localisation is measurable (the
scores of :class:`CamScores`); on real data only the share of polyp pixels masked is.
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
    """One centre's CAM quality, each a mean over its frames (NaN where it has no meaning).

    The method needs a map whose *masked* region (``cam ≥ threshold`` for ``occlude``, its
    complement for ``keep``) covers the extra-anatomical content and spares the polyp:

    - ``energy_on_overlay``: share of the CAM's total energy on overlay pixels (an energy-based
      pointing game; 0 for an all-zero map); its chance level is ``overlay_area``, the
      overlay's share of the frame;
    - ``overlay_masked``: share of overlay pixels the masking removes (frames with an overlay);
    - ``polyp_masked``: share of polyp pixels it removes (frames with a polyp) — what masking
      costs the segmentation model; needs no overlay truth, so real data has it too;
    - ``precision`` / ``iou`` of the masked region against the overlay truth;
    - ``masked_area``: the masked share of the frame.
    """

    centre: int
    frames: int
    energy_on_overlay: float
    overlay_area: float
    overlay_masked: float
    polyp_masked: float
    precision: float
    iou: float
    masked_area: float


SCORE_NAMES = tuple(f.name for f in dataclasses.fields(CamScores))[2:]  # past centre, frames
OVERLAY_SCORES = ("energy_on_overlay", "overlay_area", "overlay_masked", "precision", "iou")


def _share(part: np.ndarray, whole: np.ndarray, empty: float) -> np.ndarray:
    return np.where(whole > 0, part / np.maximum(whole, 1e-12), empty)


def frame_scores(
    cams: np.ndarray,
    polyps: np.ndarray,
    overlays: np.ndarray | None,
    *,
    threshold: float,
    mode: str = "occlude",
) -> dict[str, np.ndarray]:
    """Per-frame CAM quality (see :class:`CamScores`); overlay scores are NaN without truth.

    Conventions for empty sets: nothing masked and no overlay give precision and IoU 1; a frame
    without overlay (or polyp) has no ``overlay_masked`` (``polyp_masked``) and is left out of
    the centre's mean; a frame whose CAM is all zero points nowhere: energy share 0 (leaving it
    out would score a centre whose maps are all empty by its other frames, or not at all).
    """
    cams = np.asarray(cams, np.float32)
    binary = cams >= threshold
    masked = binary if mode == "occlude" else ~binary
    polyp = np.asarray(polyps) > 0
    n_px = masked[0].size
    scores = {
        "masked_area": masked.sum((1, 2)) / n_px,
        "polyp_masked": _share((masked & polyp).sum((1, 2)), polyp.sum((1, 2)), np.nan),
    }
    if overlays is None:
        nan = np.full(len(cams), np.nan)
        return scores | {k: nan for k in OVERLAY_SCORES}
    truth = np.asarray(overlays) > 0
    inter = (masked & truth).sum((1, 2))
    area = truth.sum((1, 2))
    return scores | {
        "energy_on_overlay": _share((cams * truth).sum((1, 2)), cams.sum((1, 2)), 0.0),
        "overlay_area": area / n_px,
        "overlay_masked": _share(inter, area, np.nan),
        "precision": _share(inter, masked.sum((1, 2)), 1.0),
        "iou": _share(inter, (masked | truth).sum((1, 2)), 1.0),
    }


def _mean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def scores_by_centre(
    cams: np.ndarray,
    polyps: np.ndarray,
    overlays: np.ndarray | None,
    centres: np.ndarray,
    *,
    threshold: float,
    mode: str = "occlude",
) -> list[CamScores]:
    scores = frame_scores(cams, polyps, overlays, threshold=threshold, mode=mode)
    out = []
    for c in sorted(set(centres.tolist())):
        rows = centres == c
        means = {name: _mean(scores[name][rows]) for name in SCORE_NAMES}
        out.append(CamScores(int(c), int(rows.sum()), **means))
    return out


def training_centre_means(scores: list[CamScores], held_out: int) -> dict[str, float]:
    """Each score averaged over the centres the classifier trained on (centres weigh alike)."""
    seen = [s for s in scores if s.centre != held_out]
    return {n: _mean(np.array([getattr(s, n) for s in seen], float)) for n in SCORE_NAMES}


_COLUMNS = (  # (field, header) in print order: the overlay's area beside the energy (chance)
    ("energy_on_overlay", "energy"),
    ("overlay_area", "chance"),
    ("overlay_masked", "overlay↓"),
    ("polyp_masked", "polyp↓"),
    ("precision", "precision"),
    ("iou", "IoU"),
    ("masked_area", "masked"),
)


def format_scores(scores: list[CamScores], held_out: int) -> str:
    header = f"{'centre':>8} {'frames':>6} " + " ".join(f"{h:>9}" for _, h in _COLUMNS)
    lines = [header]
    for s in scores:
        name = f"C{s.centre}" + ("*" if s.centre == held_out else "")
        values = " ".join(f"{getattr(s, f):>9.3f}" for f, _ in _COLUMNS)
        lines.append(f"{name:>8} {s.frames:>6} {values}")
    lines += [
        "energy: share of CAM energy on overlay pixels; chance: the overlay's share of the frame;",
        "overlay↓ / polyp↓: share of overlay / polyp pixels masked; * held-out centre (unseen)",
    ]
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
    data, split, fold, runtime, out_png: Path, *, threshold: float, mode: str = "occlude"
) -> tuple[list[CamScores], np.ndarray]:
    """Scores every centre's CAMs against the overlay truth and writes the figure.

    Training centres use the fold's cached CAMs; the held-out centre's CAMs are computed here
    (the classifier never trained on it, so they show how the cue transfers).

    Returns:
        Per-centre scores (overlay scores NaN without overlay truth) and the CAMs of the
        held-out centre.
    """
    from trainables.classifier import fold_cams

    classifier = fold.load_classifier(runtime.device)
    # The held-out centre has no label in the fold: its maps explain the prediction.
    held = dataclasses.replace(fold.cam, target="predicted")
    held_cams = fold_cams(classifier, data, split.test_out, runtime, cam=held)
    indices = np.concatenate([fold.train_indices, split.test_out])
    cams = np.concatenate([np.asarray(fold.cams), held_cams])
    centres = data.centres[indices]
    overlays = None if data.overlays is None else data.overlays[indices]
    scores = scores_by_centre(
        cams, data.masks[indices], overlays, centres, threshold=threshold, mode=mode
    )
    rows = []
    for c in sorted(set(centres.tolist())):
        k = int(np.flatnonzero(centres == c)[0])
        i = int(indices[k])
        overlay = None if data.overlays is None else data.overlays[i]
        label = f"C{c}" + (" (held out)" if c == split.held_out else "")
        rows.append((label, np.asarray(data.images[i]), cams[k].astype(np.float32), overlay))
    cam_figure(out_png, rows, threshold)
    return scores, held_cams
