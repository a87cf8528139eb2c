"""CAM-vs-overlay scores and the `camsweep cams` figure."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from sweeps.cli import main
from trainables.cam_report import overlay_scores, scores_by_centre


def test_overlay_scores_known_values():
    cams = np.zeros((3, 4, 4), np.float32)
    overlays = np.zeros((3, 4, 4), np.uint8)
    cams[0, :2] = 0.9  # 8 px masked, 4 of them overlay
    overlays[0, 0] = 1
    cams[1] = 0.49  # below threshold: nothing masked, overlay missed
    overlays[1, :, 0] = 1
    # frame 2: nothing masked, no overlay → both 1 by convention
    s = overlay_scores(cams, overlays, threshold=0.5)
    np.testing.assert_allclose(s["precision"], [0.5, 1.0, 1.0])
    np.testing.assert_allclose(s["iou"], [0.5, 0.0, 1.0])
    np.testing.assert_allclose(s["masked_area"], [0.5, 0.0, 0.0])
    by_centre = scores_by_centre(cams, overlays, np.array([1, 1, 2]), 0.5)
    assert [(b.centre, b.frames) for b in by_centre] == [(1, 2), (2, 1)]
    assert by_centre[0].precision == pytest.approx(0.75)


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
    assert "C4*" in out and "precision" in out
    assert len([ln for ln in out.splitlines() if re.match(r"\s+C\d", ln)]) == 6
    with Image.open(png) as im:
        assert im.width > 200 and im.height > 6 * 100  # six centre rows
