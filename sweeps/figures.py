"""Export figures: Dice against the masking probability, and the paper's CAM figure."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from sweeps.selection import Selection, Setting, held_out_centres
from sweeps.spec import FOLDS_FILE, SPEC_FILE, load_spec
from sweeps.tables import TableRow, arch_label
from trainables import metric_keys as K


def plot_dice_vs_p(
    settings: Sequence[Setting],
    rows: Sequence[TableRow],
    selection: Selection,
    path: Path,
    *,
    title: str,
    archs: Sequence[str],
) -> None:
    """Out-of-distribution Dice (solid) and validation Dice (dashed) against p, one panel per
    held-out centre, one colour per architecture; the selected augmented arm is starred."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    centres = held_out_centres(settings)
    ncols = min(3, len(centres))
    nrows = math.ceil(len(centres) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    colours = {arch: f"C{i}" for i, arch in enumerate(archs)}
    test_key, val_key = K.split_key("test_out", "dice"), K.VAL_DICE
    for ax, k in zip(axes.flat, centres):
        for arch in archs:
            fold = [s for s in settings if s.arch == arch and s.held_out == k]
            per_p = [
                selection.best(s for s in fold if s.p == p) for p in sorted({s.p for s in fold})
            ]
            if not per_p:
                continue
            ps = [s.p for s in per_p]
            ax.errorbar(
                ps,
                [s.mean(test_key) for s in per_p],
                yerr=[s.std(test_key) for s in per_p],
                color=colours[arch],
                marker="o",
                capsize=3,
                label=f"{arch_label(arch)} OOD",
            )
            ax.plot(ps, [s.mean(val_key) for s in per_p], color=colours[arch], ls="--", alpha=0.6)
            row = next((r for r in rows if r.arch == arch and r.held_out == k), None)
            if row is not None and row.augmented is not None:
                ax.plot(
                    [row.augmented.p],
                    [row.augmented.mean(test_key)],
                    marker="*",
                    markersize=14,
                    color=colours[arch],
                    ls="none",
                )
        ax.set_title(f"held-out C{k}")
        ax.set_xlabel("masking probability p")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("Dice")
    for ax in list(axes.flat)[len(centres) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    handles.append(axes.flat[0].plot([], [], color="grey", ls="--")[0])
    labels.append("val Dice (best checkpoint)")
    handles.append(axes.flat[0].plot([], [], color="grey", marker="*", ls="none")[0])
    labels.append("selected augmented arm")
    fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)))
    fig.suptitle(f"{title}: Dice vs p (seed mean ± sd) — selection {selection.label}")
    fig.savefig(path, dpi=120)


def export_cam_figure(run_dir: Path, out: Path) -> tuple[Path | None, str]:
    """The paper's Figure 1 for the run's first masked fold, from the stored fold artefacts.

    Returns the PNG (None when no fold was prepared, e.g. a baseline-only sweep) and a note.
    """
    from trainables.cache_folder import load_sealed
    from trainables.cam_report import cam_report, training_centre_means
    from trainables.classifier import load_fold
    from trainables.data.source import fold_split, prepare_data
    from trainables.engine import Runtime
    from trainables.trial import trial_fold_entry

    spec = load_spec(Path(run_dir) / SPEC_FILE, environment=False)
    folds = json.loads((Path(run_dir) / FOLDS_FILE).read_text())
    centres = sorted(folds.get("trained", []) + folds.get("reused", []))
    if not centres:
        return None, "no CAM figure: no fold needed the centre classifier (baseline-only sweep)"
    cfg = spec.trial_config({"held_out_centre": centres[0]})
    _, data = prepare_data(cfg.data)
    split = fold_split(data, cfg.data, centres[0])
    folder = trial_fold_entry(cfg, data, split, spec.fold_cache_root())
    try:
        fold = load_sealed(folder, load_fold, "fold cache")
    except ValueError as exc:  # gone (another machine's cache, cleaned up) or damaged
        return None, f"no CAM figure: {exc}"
    png = Path(out) / "cams.png"
    scores, _ = cam_report(
        data, split, fold, Runtime.from_config(cfg.train), png,
        threshold=cfg.masking.threshold, mode=cfg.masking.mode,
    )  # fmt: skip
    means = training_centre_means(scores, centres[0])
    mean = f"polyp masked {means['polyp_masked']:.3f}"
    if data.overlays is not None:
        mean = (
            f"CAM energy on overlays {means['energy_on_overlay']:.3f} (chance "
            f"{means['overlay_area']:.3f}), overlay masked {means['overlay_masked']:.3f}, {mean}"
        )
    return png, f"CAM figure for held-out C{centres[0]} (training centres: {mean})"
