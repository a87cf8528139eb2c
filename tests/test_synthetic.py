from __future__ import annotations

import itertools
import json
import re
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from trainables.data import synthetic
from trainables.data.synthetic import POLYPGEN_CENTRE_SIZES, SynthRecord, generate, parse_size

SIZE = (64, 48)
CENTRES = (1, 2, 3, 4, 5, 6)
STEM = re.compile(r"C(\d)_(P\d{3})_(\d{4})")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SynthRecord]]:
    out = tmp_path_factory.mktemp("synth")
    return out, generate(out, per_centre=6, size=SIZE, seed=0)


def _gray(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert image is not None, path
    return image


def _binary(path: Path) -> np.ndarray:
    return _gray(path) >= 128


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_writes_polypgen_layout_with_patient_names(dataset):
    out, records = dataset
    assert len(records) == 6 * len(CENTRES)
    expected = set()
    for r in records:
        k = r.centre
        stem = r.image.name.removesuffix(".jpg")
        match = STEM.fullmatch(stem)
        assert match is not None, stem
        assert int(match.group(1)) == k and match.group(2) == r.patient
        assert r.image == out / f"data_C{k}" / f"images_C{k}" / f"{stem}.jpg"
        assert r.mask == out / f"data_C{k}" / f"masks_C{k}" / f"{stem}_mask.jpg"
        assert r.overlay == out / f"data_C{k}" / f"overlays_C{k}" / f"{stem}_overlay.png"
        image = cv2.imread(str(r.image), cv2.IMREAD_UNCHANGED)
        assert image.shape == (SIZE[1], SIZE[0], 3)
        assert _gray(r.mask).shape == _gray(r.overlay).shape == (SIZE[1], SIZE[0])
        expected |= {str(p.relative_to(out)) for p in (r.image, r.mask, r.overlay)}
    # Nothing else on disk but the manifest, so the real loader sees exactly these frames.
    assert set(_files(out)) == expected | {"synth.json"}

    manifest = json.loads((out / "synth.json").read_text())
    assert manifest["seed"] == 0 and manifest["size"] == list(SIZE)
    assert manifest["per_centre"] == 6 and manifest["centres"] == list(CENTRES)
    assert manifest["counts"] == {str(k): 6 for k in CENTRES}
    assert manifest["complete"] is True and manifest["total"] == len(records)


def test_patients_have_2_to_10_frames_numbered_from_zero(tmp_path):
    records = generate(tmp_path, per_centre=57, size=(32, 32), seed=3, centres=(2,))
    frames = defaultdict(list)
    for r in records:
        frames[r.patient].append(int(STEM.fullmatch(r.image.stem).group(3)))
    assert len(frames) >= 6
    for patient, numbers in frames.items():
        assert 2 <= len(numbers) <= 10, patient
        assert numbers == list(range(len(numbers)))
    assert sorted(frames) == [f"P{i:03d}" for i in range(1, len(frames) + 1)]


def test_frames_of_a_patient_share_tint(tmp_path):
    records = generate(tmp_path, per_centre=40, size=SIZE, seed=0, centres=(4,))
    chroma = defaultdict(list)
    for r in records:
        rgb = cv2.imread(str(r.image))[..., ::-1].astype(np.float64)
        mucosa = rgb[~_binary(r.overlay) & ~_binary(r.mask)]
        red = mucosa[:, 0].mean()
        chroma[r.patient].append([mucosa[:, 1].mean() / red, mucosa[:, 2].mean() / red])
    groups = [np.array(v) for v in chroma.values()]
    within = np.concatenate([g - g.mean(axis=0) for g in groups]).var(axis=0)
    total = np.concatenate(groups).var(axis=0)
    assert np.all(within < 0.5 * total), within / total


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    a = generate(tmp_path / "a", per_centre=3, size=SIZE, seed=7)
    generate(tmp_path / "b", per_centre=3, size=SIZE, seed=7)
    generate(tmp_path / "c", per_centre=3, size=SIZE, seed=8)
    files_a, files_b, files_c = (_files(tmp_path / n) for n in "abc")
    assert files_a == files_b
    # Patient partitions may differ between seeds; compare frames present in both.
    images = [str(r.image.relative_to(tmp_path / "a")) for r in a]
    shared = [name for name in images if name in files_c]
    assert shared and all(files_a[name] != files_c[name] for name in shared)


def test_every_frame_has_overlay_and_polyps_never_overlap_it(dataset):
    _, records = dataset
    for r in records:
        overlay = _binary(r.overlay)
        assert overlay.any(), r.overlay
        assert not (overlay & _binary(r.mask)).any(), r.mask
        # Lossless PNG: exactly 0/255.
        assert set(np.unique(_gray(r.overlay))) <= {0, 255}


@pytest.mark.parametrize("size", [SIZE, (640, 480), (1920, 1080)])
def test_overlay_mask_covers_every_pixel_the_overlay_draws(tmp_path, monkeypatch, size):
    leaks = []

    def checked(style):
        def draw(rng: np.random.Generator, rgb: np.ndarray) -> np.ndarray:
            before = rgb.copy()
            mask = style(rng, rgb)
            changed = (rgb != before).any(axis=2)
            leaks.append(int((changed & (mask == 0)).sum()))
            return mask

        return draw

    for k, style in list(synthetic._OVERLAYS.items()):
        monkeypatch.setitem(synthetic._OVERLAYS, k, checked(style))
    generate(tmp_path, per_centre=2 if size == SIZE else 1, size=size, seed=2)
    assert len(leaks) == (12 if size == SIZE else 6) and leaks == [0] * len(leaks)


def test_overlay_pixels_are_removed_from_polyp_masks(tmp_path, monkeypatch):
    # Real styles rarely reach the central polyps, so cover the left half to force the case.
    def left_half(rng: np.random.Generator, rgb: np.ndarray) -> np.ndarray:
        mask = np.zeros(rgb.shape[:2], np.uint8)
        mask[:, : rgb.shape[1] // 2] = 1
        rgb[mask > 0] = 0
        return mask

    monkeypatch.setitem(synthetic._OVERLAYS, 1, left_half)
    records = generate(tmp_path, per_centre=12, size=SIZE, seed=0, centres=(1,))
    polyps = np.array([_binary(r.mask) for r in records])
    assert polyps[:, :, SIZE[0] // 2 :].any()
    assert not polyps[:, :, : SIZE[0] // 2].any()


def test_polyp_masks_are_binary_and_some_frames_have_none(dataset):
    _, records = dataset
    areas = []
    for r in records:
        mask = _gray(r.mask)
        assert np.all((mask <= 32) | (mask >= 223)), r.mask
        areas.append(int((mask >= 128).sum()))
    assert sum(a > 0 for a in areas) >= len(records) // 2
    assert 0 in areas


def test_centre_overlay_styles_are_distinct(dataset):
    _, records = dataset
    by_centre = defaultdict(list)
    for r in records:
        by_centre[r.centre].append(_binary(r.overlay).astype(np.float64))
    mean = {k: np.mean(v, axis=0) >= 0.5 for k, v in by_centre.items()}
    for i, j in itertools.combinations(CENTRES, 2):
        union = (mean[i] | mean[j]).sum()
        iou = (mean[i] & mean[j]).sum() / union
        assert iou < 0.75, (i, j, iou)

    # Stronger: each single overlay mask is closest (IoU) to its own centre's mean mask computed
    # without it, so the style, not one fixed pixel pattern, identifies the centre.
    for k, masks in by_centre.items():
        for n, m in enumerate(masks):
            own = np.mean([x for idx, x in enumerate(masks) if idx != n], axis=0) >= 0.5
            refs = {c: own if c == k else mean[c] for c in CENTRES}
            m = m > 0
            scores = {c: (m & ref).sum() / max(1, (m | ref).sum()) for c, ref in refs.items()}
            assert max(scores, key=scores.get) == k, (k, n, scores)


def test_overlays_vary_per_image(dataset):
    _, records = dataset
    for k in CENTRES:
        overlays = {_gray(r.overlay).tobytes() for r in records if r.centre == k}
        assert len(overlays) > 1, k


def test_colours_are_rgb_correct(dataset):
    _, records = dataset
    for r in records:
        rgb = cv2.imread(str(r.image))[..., ::-1].astype(np.float64)
        overlay = _binary(r.overlay)
        red, green, blue = rgb[~overlay].mean(axis=0)
        assert red > 1.3 * green and red > 1.3 * blue, (r.image, red, green, blue)
        if r.centre in (1, 3, 6):  # black borders and bars
            assert np.median(rgb[overlay].max(axis=1)) < 40, r.image


@pytest.mark.parametrize("size", [(32, 32), (48, 96), (200, 37)])
def test_small_and_odd_sizes_keep_every_style(tmp_path, size):
    records = generate(tmp_path, per_centre=2, size=size, seed=1)
    for r in records:
        image = cv2.imread(str(r.image))
        assert image.shape == (size[1], size[0], 3)
        assert _binary(r.overlay).mean() > 0.005, r.overlay


def test_scale_sets_counts_from_polypgen_sizes(tmp_path):
    records = generate(tmp_path, scale=0.05, size=(32, 32), seed=0)
    counts = {k: sum(r.centre == k for r in records) for k in CENTRES}
    assert counts == {k: round(0.05 * n) for k, n in POLYPGEN_CENTRE_SIZES.items()}
    manifest = json.loads((tmp_path / "synth.json").read_text())
    assert manifest["counts"] == {str(k): v for k, v in counts.items()}


def test_tiny_scale_keeps_one_frame_and_centres_subset(tmp_path):
    records = generate(tmp_path, scale=0.001, size=(32, 32), centres=(2, 5))
    assert [r.centre for r in records] == [2, 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data_C2", "data_C5", "synth.json"]


def test_existing_dataset_needs_overwrite(tmp_path):
    generate(tmp_path, per_centre=2, size=(32, 32), centres=(1, 2))
    with pytest.raises(FileExistsError, match="overwrite"):
        generate(tmp_path, per_centre=2, size=(32, 32))
    generate(tmp_path, per_centre=2, size=(32, 32), centres=(3,), overwrite=True)
    # The old centres are gone, so the loader cannot mix two datasets.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data_C3", "synth.json"]


def test_refuses_to_touch_a_foreign_dataset(tmp_path):
    (tmp_path / "data_C1" / "images_C1").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="data_C1"):
        generate(tmp_path, per_centre=2, size=(32, 32), overwrite=True)
    assert (tmp_path / "data_C1" / "images_C1").is_dir()


def test_parse_size():
    assert parse_size("640x480") == (640, 480)
    assert parse_size("1920X1080") == (1920, 1080)
    with pytest.raises(ValueError, match="64by48"):
        parse_size("64by48")
    with pytest.raises(ValueError, match="16x48"):
        parse_size("16x48")


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"per_centre": 3, "scale": 0.5}, "per_centre=3, scale=0.5"),
        ({"per_centre": 0}, "0"),
        ({"scale": -1.0}, "-1.0"),
        ({"size": (31, 64)}, "31x64"),
        ({"size": (64, 8)}, "64x8"),
        ({"centres": (1, 7)}, "7.*valid centres: 1, 2, 3, 4, 5, 6"),
        ({"seed": -2}, "-2"),
        ({"per_centre": 2.5}, "2.5"),
        ({"centres": ()}, "empty"),
    ],
)
def test_bad_arguments_raise_naming_the_value(tmp_path, kwargs, named):
    kwargs = {"per_centre": 1, "size": (32, 32)} | kwargs
    if "scale" in kwargs and kwargs.get("per_centre") == 1:
        del kwargs["per_centre"]
    with pytest.raises(ValueError, match=named):
        generate(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()
