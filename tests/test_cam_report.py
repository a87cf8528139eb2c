"""CAM-vs-overlay scores and the `camsweep cams` figure."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from sweeps.cli import main
from trainables.cam_report import (
    format_scores,
    frame_scores,
    scores_by_centre,
    training_centre_means,
)


def test_cam_scores_known_values():
    cams = np.zeros((3, 4, 4), np.float32)
    overlays = np.zeros((3, 4, 4), np.uint8)
    polyps = np.zeros((3, 4, 4), np.uint8)
    cams[0, :2] = 0.9  # 8 px masked, 4 of them overlay (row 0)
    cams[0, 3, 3] = 0.3  # energy below the threshold still counts: 8·0.9 + 0.3 in all
    overlays[0, 0] = 1
    polyps[0, 1, :2] = 1  # 2 polyp px, both masked
    polyps[0, 3, :2] = 1  # 2 more, spared
    cams[1] = 0.49  # below threshold: nothing masked, overlay missed; flat energy: 4 of 16 px
    overlays[1, :, 0] = 1
    polyps[1, 0, 0] = 1
    # frame 2: no overlay, no polyp, no energy → precision/IoU 1, energy share 0, the rest
    # undefined
    s = frame_scores(cams, polyps, overlays, threshold=0.5)
    np.testing.assert_allclose(s["energy_on_overlay"][:2], [4 * 0.9 / (8 * 0.9 + 0.3), 0.25])
    np.testing.assert_allclose(s["overlay_area"], [0.25, 0.25, 0.0])
    np.testing.assert_allclose(s["overlay_masked"][:2], [1.0, 0.0])
    np.testing.assert_allclose(s["polyp_masked"][:2], [0.5, 0.0])
    np.testing.assert_allclose(s["precision"], [0.5, 1.0, 1.0])
    np.testing.assert_allclose(s["iou"], [0.5, 0.0, 1.0])
    np.testing.assert_allclose(s["masked_area"], [0.5, 0.0, 0.0])
    assert s["energy_on_overlay"][2] == 0.0  # an all-zero map points nowhere
    assert np.isnan(s["overlay_masked"][2])
    assert np.isnan(s["polyp_masked"][2])
    # keep masks the complement: the overlay half of frame 0 is spared, its spared polyp lost.
    keep = frame_scores(cams, polyps, overlays, threshold=0.5, mode="keep")
    np.testing.assert_allclose(keep["overlay_masked"][:2], [0.0, 1.0])
    np.testing.assert_allclose(keep["polyp_masked"][:2], [0.5, 1.0])
    by_centre = scores_by_centre(cams, polyps, overlays, np.array([1, 1, 2]), threshold=0.5)
    assert [(b.centre, b.frames) for b in by_centre] == [(1, 2), (2, 1)]
    assert by_centre[0].precision == pytest.approx(0.75)
    assert by_centre[0].polyp_masked == pytest.approx(0.25)
    assert np.isnan(by_centre[1].polyp_masked)  # no polyp frame: no mean, not a zero
    means = training_centre_means(by_centre, held_out=2)
    assert means["overlay_area"] == pytest.approx(0.25)


def test_real_data_without_overlay_truth_still_scores_the_polyp():
    cams = np.full((2, 4, 4), 0.9, np.float32)
    polyps = np.ones((2, 4, 4), np.uint8)
    (score,) = scores_by_centre(cams, polyps, None, np.array([5, 5]), threshold=0.5)
    assert score.polyp_masked == 1.0 and np.isnan(score.energy_on_overlay)
    assert "nan" in format_scores([score], held_out=1)


def test_cams_command_writes_figure_and_scores(tmp_path, capsys):
    png = tmp_path / "fig.png"
    argv = [
        "cams", "--out", str(png), "--fold-cache", str(tmp_path / "folds"), "--held-out", "4",
        "--image-size", "32", "--set", f"data.cache_dir={tmp_path / 'cache'}",
        "--set", "data.synthetic.per_centre=16", "--set", "data.synthetic.size=48x48",
        "--set", "classifier.arch=resnet18", "--set", "classifier.epochs=1",
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "C4*" in out and "precision" in out and "polyp↓" in out
    assert len([ln for ln in out.splitlines() if re.match(r"\s+C\d", ln)]) == 6
    with Image.open(png) as im:
        assert im.width > 200 and im.height > 6 * 100  # six centre rows
