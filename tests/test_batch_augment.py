"""The batched augmentation path against the albumentations pipeline it replaces.

Tolerances, in grey levels of the 0–255 image (the normalised output times std × 255):

- Geometry: albumentations' OpenCV warp rounds its uint8 output and uses fixed-point bilinear
  weights; the batched path keeps float32. Image: mean ≤ 0.3, max ≤ 1 level. Mask and CAM use
  nearest-neighbour sampling in both, but OpenCV snaps the sampling position to 1/1024 px and rounds
  halves up, grid_sample uses the float position and rounds halves to even: the two can only pick
  different source pixels for a sample point within ~1/1024 px of a pixel edge, and that changes a
  label only on a label boundary. We allow 0.2 % of pixels and require every mismatch to lie on a
  boundary (in practice there are none).
- Flips: exact.
- Colour jitter: on float32 input albumentations does the same float maths, so the two agree to
  0.01 level (factors and random order). On uint8 input albumentations truncates brightness and
  contrast to uint8 after the step (≤ 1 level, 0.5 on average) and rounds both the grey image and
  the saturation blend (≤ 0.5 + 0.5 × 0.2); its uint8 hue works on H quantised to 2° plus a
  truncated shift, up to 3° of hue, i.e. up to 3/60 of the chroma ≈ 13 levels on a fully
  saturated pixel (mean ≤ 1). The whole pipeline (rotation, flips, all four jitter operations) on
  saturated synthetic scenes: mean ≤ 2.5 levels (measured ≤ 1.9), 0.3 without jitter.
- The released code's settings (``normalise: first``, ``rotate_border: reflect``): the transforms
  see the normalised float image, which OpenCV never rounds to uint8. Reflected rotation: on uint8
  the tolerances of the constant border (measured ≤ 0.5 level); on floats max ≤ 0.05 (measured
  0.0003). Jitter on normalised floats, albumentations' float maths: ≤ 0.01 (measured 0.0002).
  The whole pipeline with normalise first: max ≤ 0.05 (measured 0.0005).
"""

from __future__ import annotations

import dataclasses
import math

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from trainables.data.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentConfig,
    build_train_transform,
)
from trainables.data.batch_augment import (
    BRIGHTNESS_RANGE,
    CONTRAST_RANGE,
    HUE_RANGE,
    SATURATION_RANGE,
    AugmentParams,
    BatchAugment,
    normalize,
)
from trainables.data.cache import DecodedData
from trainables.data.dataset import SegmentationDataset
from trainables.data.device_loader import DeviceBatches, DeviceData

SIZE = 48
MODES = ("index", "where")
NO_AUG = AugmentConfig(rotate_p=0, hflip_p=0, vflip_p=0, color_jitter_p=0)


# --- helpers ------------------------------------------------------------------------------------


def _scene(seed: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A smooth, saturated RGB frame; a blocky binary mask; a blocky CAM with several levels."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    image = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    mask = (rng.random((5, 5)) > 0.5).astype(np.uint8)
    mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
    cam = rng.random((6, 6)).astype(np.float32)
    cam = cv2.resize(cam, (size, size), interpolation=cv2.INTER_NEAREST)
    return image, mask, cam


def _batch(scenes) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images = torch.stack([torch.from_numpy(i).permute(2, 0, 1) for i, _, _ in scenes])
    masks = torch.stack([torch.from_numpy(m) for _, m, _ in scenes])
    cams = torch.stack([torch.from_numpy(c) for _, _, c in scenes])
    return images, masks, cams


def _params(n: int, **fields) -> AugmentParams:
    """Identity parameters for n samples with the given fields set (lists or scalars)."""
    base = AugmentParams.identity(n)
    values = {}
    for name, value in fields.items():
        like = getattr(base, name)
        t = torch.as_tensor(value, dtype=like.dtype)
        values[name] = t.expand_as(like).clone() if t.dim() < like.dim() else t
    return dataclasses.replace(base, **values)


def _reference(transforms, image, mask, cam) -> dict[str, np.ndarray]:
    pipeline = A.Compose(
        [*transforms, A.Normalize(mean=(0.485, 0.456, 0.406), std=IMAGENET_STD)],
        additional_targets={"cam": "mask"},
    )
    return pipeline(image=image, mask=mask, cam=cam)


def _levels(ours: torch.Tensor, reference_hwc: np.ndarray) -> np.ndarray:
    """Absolute difference of two normalised images, in grey levels."""
    std = np.asarray(IMAGENET_STD, np.float32)[:, None, None] * 255
    return np.abs(ours.numpy() - reference_hwc.transpose(2, 0, 1)) * std


def _on_boundary(label: np.ndarray) -> np.ndarray:
    """Pixels with a differently labelled 8-neighbour."""
    lo = cv2.erode(label.astype(np.float32), np.ones((3, 3), np.uint8))
    hi = cv2.dilate(label.astype(np.float32), np.ones((3, 3), np.uint8))
    return lo != hi


def _assert_labels_match(ours: torch.Tensor, reference: np.ndarray) -> None:
    ours = ours.numpy()
    differ = ours != reference
    assert differ.mean() <= 0.002, f"{differ.sum()} label pixels differ"
    assert not (differ & ~_on_boundary(reference)).any(), "a label differs off a boundary"


# --- geometry -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_rotation_matches_albumentations(mode):
    angles = [-90.0, -47.3, 13.7, 30.0, 90.0, 171.0]
    scenes = [_scene(s) for s in range(len(angles))]
    params = _params(len(angles), rotate=True, angle=angles)
    image, mask, cam = BatchAugment(NO_AUG, row_selection=mode).apply(*_batch(scenes), params)
    for k, (angle, (i, m, c)) in enumerate(zip(angles, scenes)):
        rotate = A.Rotate(
            limit=(angle, angle), p=1, border_mode=cv2.BORDER_CONSTANT, mask_interpolation=0
        )
        ref = _reference([rotate], i, m, c)
        diff = _levels(image[k], ref["image"])
        assert diff.mean() <= 0.3 and diff.max() <= 1.0, (angle, diff.mean(), diff.max())
        _assert_labels_match(mask[k, 0], ref["mask"])
        _assert_labels_match(cam[k, 0], ref["cam"])


def test_non_square_frames_rotate_with_their_aspect_ratio():
    # Rotation + flips on a 40×56 frame: the grid must undo the aspect ratio, and the mirrored
    # angle used when flipping first must hold off the square too.
    cases = [(37.0, False, False), (-62.0, True, False), (115.0, True, True)]
    scenes = []
    for s in range(len(cases)):
        i, m, c = _scene(90 + s, 56)
        crop = slice(8, 48)
        scenes.append((i[crop].copy(), m[crop].copy(), c[crop].copy()))
    angle, hflip, vflip = (list(x) for x in zip(*cases))
    params = _params(3, rotate=True, angle=angle, hflip=hflip, vflip=vflip)
    image, mask, cam = BatchAugment(NO_AUG).apply(*_batch(scenes), params)
    for k, ((a, h, v), (i, m, c)) in enumerate(zip(cases, scenes)):
        ref = _reference(
            [
                A.Rotate(limit=(a, a), p=1, border_mode=cv2.BORDER_CONSTANT, mask_interpolation=0),
                A.HorizontalFlip(p=float(h)),
                A.VerticalFlip(p=float(v)),
            ],
            i,
            m,
            c,
        )
        diff = _levels(image[k], ref["image"])
        assert diff.mean() <= 0.3 and diff.max() <= 1.0, (a, diff.mean(), diff.max())
        _assert_labels_match(mask[k, 0], ref["mask"])
        _assert_labels_match(cam[k, 0], ref["cam"])


@pytest.mark.parametrize("mode", MODES)
def test_flips_match_albumentations_exactly(mode):
    cases = [(True, False), (False, True), (True, True)]
    scenes = [_scene(10 + s) for s in range(len(cases))]
    params = _params(3, hflip=[h for h, _ in cases], vflip=[v for _, v in cases])
    image, mask, cam = BatchAugment(NO_AUG, row_selection=mode).apply(*_batch(scenes), params)
    for k, ((h, v), (i, m, c)) in enumerate(zip(cases, scenes)):
        flips = [A.HorizontalFlip(p=float(h)), A.VerticalFlip(p=float(v))]
        ref = _reference(flips, i, m, c)
        assert _levels(image[k], ref["image"]).max() < 1e-3
        assert np.array_equal(mask[k, 0].numpy(), ref["mask"])
        assert np.array_equal(cam[k, 0].numpy(), ref["cam"])


def test_marker_moves_identically_in_image_mask_and_cam():
    size, n = 32, 24
    image = np.zeros((size, size, 3), np.uint8)
    image[6:9, 9:12] = 255  # off-centre, so every transform moves it
    mask = np.zeros((size, size), np.uint8)
    mask[6:9, 9:12] = 1
    cam = mask.astype(np.float32)
    batch = _batch([(image, mask, cam)] * n)
    cfg = AugmentConfig(rotate_p=1.0, rotate_limit=90, hflip_p=0.5, vflip_p=0.5, color_jitter_p=0)
    aug = BatchAugment(cfg)
    params = aug.sample_params(n, torch.Generator().manual_seed(0))
    out, out_mask, out_cam = aug.apply(*batch, params)
    moved = 0
    for k in range(n):
        m, c = out_mask[k, 0] > 0.5, out_cam[k, 0] > 0.5
        assert torch.equal(m, c), f"sample {k}: mask and CAM diverged"
        ys, xs = np.nonzero(m.numpy())
        assert len(ys), f"sample {k}: the marker left the frame"
        brightness = out[k].sum(0)
        peak = np.unravel_index(int(brightness.argmax()), (size, size))
        # The bilinear image peak sits on the nearest-neighbour marker (at most a pixel apart).
        assert min(abs(peak[0] - y) + abs(peak[1] - x) for y, x in zip(ys, xs)) <= 1
        moved += (ys.min(), xs.min()) != (6, 9)
    assert moved >= n - 2

    # Without rotation the flips are exact: the marker lands on the mirrored pixels.
    flips = _params(3, hflip=[True, False, True], vflip=[False, True, True])
    out, out_mask, out_cam = BatchAugment(NO_AUG).apply(*_batch([(image, mask, cam)] * 3), flips)
    expected = [mask[:, ::-1], mask[::-1, :], mask[::-1, ::-1]]
    for k, want in enumerate(expected):
        assert np.array_equal(out_mask[k, 0].numpy(), want)
        assert np.array_equal(out_cam[k, 0].numpy(), want.astype(np.float32))
        lit = (out[k] > out[k].min()).all(0).numpy()  # every channel above black
        assert np.array_equal(lit, want.astype(bool))


# --- colour jitter ------------------------------------------------------------------------------

JITTER_OPS = {
    "brightness": [0.8, 1.2],
    "contrast": [0.8, 1.2],
    "saturation": [0.8, 1.2],
    "hue": [-0.4, 0.13, 0.5],
}
UINT8_LIMITS = {"brightness": (0.6, 1.0), "contrast": (0.6, 1.0), "saturation": (0.3, 0.6)}


def _albu_jitter(name: str, value: float) -> A.ColorJitter:
    ranges = {"brightness": (1, 1), "contrast": (1, 1), "saturation": (1, 1), "hue": (0, 0)}
    ranges[name] = (value, value)
    return A.ColorJitter(**ranges, p=1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(JITTER_OPS))
def test_each_jitter_operation_matches_albumentations_on_uint8(name, mode):
    values = JITTER_OPS[name]
    scenes = [_scene(20 + s) for s in range(len(values))]
    params = _params(len(values), jitter=True, **{name: values})
    image, mask, cam = BatchAugment(NO_AUG, row_selection=mode).apply(*_batch(scenes), params)
    for k, (value, (i, m, c)) in enumerate(zip(values, scenes)):
        diff = _levels(image[k], _reference([_albu_jitter(name, value)], i, m, c)["image"])
        mean_limit, max_limit = UINT8_LIMITS.get(name, (1.0, 13.0))
        assert diff.mean() <= mean_limit and diff.max() <= max_limit, (value, diff.mean())
        assert np.array_equal(mask[k, 0].numpy(), m), "jitter must not touch the mask"
        assert np.array_equal(cam[k, 0].numpy(), c), "jitter must not touch the CAM"


def test_jitter_with_random_order_matches_albumentations_float_maths():
    """On float32 input albumentations does float maths too: factors *and* order must agree."""
    n = 12
    rng = np.random.default_rng(3)
    scenes = [_scene(40 + s) for s in range(n)]
    values = {
        "brightness": rng.uniform(*BRIGHTNESS_RANGE, n),
        "contrast": rng.uniform(*CONTRAST_RANGE, n),
        "saturation": rng.uniform(*SATURATION_RANGE, n),
        "hue": rng.uniform(*HUE_RANGE, n),
    }
    orders = np.stack([rng.permutation(4) for _ in range(n)])
    params = _params(n, jitter=True, order=orders, **values)
    images = _batch(scenes)[0].float()
    out = BatchAugment(NO_AUG).apply(images, torch.zeros(n, SIZE, SIZE), None, params)[0]
    for k, (image, _, _) in enumerate(scenes):
        ref = A.ColorJitter().apply(
            image.astype(np.float32) / 255,
            **{key: float(v[k]) for key, v in values.items()},
            order=list(orders[k]),
        )
        ref = A.Normalize(mean=(0.485, 0.456, 0.406), std=IMAGENET_STD, max_pixel_value=1.0)(
            image=ref
        )["image"]
        assert _levels(out[k], ref).max() <= 0.01, f"sample {k}, order {orders[k]}"


def _random_params(n: int, *, seed: int, hue_range, jitter: dict[int, bool] | None = None):
    """Every transform with random parameters: rotation always, flips and jitter drawn
    (``jitter`` forces some samples), jitter factors, hue and order at random. Returns the
    parameters and the drawn values (float64, for the albumentations reference)."""
    rng = np.random.default_rng(seed)
    drawn = {"angle": rng.uniform(-90, 90, n)}
    drawn["hflip"], drawn["vflip"], drawn["jitter"] = (rng.random(n) < 0.5 for _ in range(3))
    for i, value in (jitter or {}).items():
        drawn["jitter"][i] = value
    for k in ("brightness", "contrast", "saturation"):
        drawn[k] = rng.uniform(0.8, 1.2, n)
    drawn["hue"] = rng.uniform(*hue_range, n)
    drawn["order"] = np.stack([rng.permutation(4) for _ in range(n)])
    return _params(n, rotate=True, **drawn), drawn


def _albumentations_replay(scene, k: int, drawn: dict, *, border: int = 0, first: bool = False):
    """Sample ``k``'s drawn transforms replayed with albumentations: (image, mask, CAM).
    ``first``: normalised before the transforms; ``border``: the rotation's OpenCV border."""
    image, mask, cam = scene
    steps = [NORMALIZE] if first else []
    steps += [
        A.Rotate(limit=(drawn["angle"][k],) * 2, p=1, border_mode=border, mask_interpolation=0),
        A.HorizontalFlip(p=float(drawn["hflip"][k])),
        A.VerticalFlip(p=float(drawn["vflip"][k])),
    ]
    moved = A.Compose(steps, additional_targets={"cam": "mask"})(image=image, mask=mask, cam=cam)
    image = moved["image"]
    if drawn["jitter"][k]:
        kw = {key: float(drawn[key][k]) for key in ("brightness", "contrast", "saturation")}
        order = list(drawn["order"][k])
        image = A.ColorJitter().apply(image, **kw, hue=float(drawn["hue"][k]), order=order)
    return image, moved["mask"], moved["cam"]


def test_whole_pipeline_matches_albumentations_with_known_parameters():
    n = 10
    scenes = [_scene(60 + s) for s in range(n)]
    params, drawn = _random_params(n, seed=7, hue_range=HUE_RANGE)
    outs = {m: BatchAugment(NO_AUG, row_selection=m).apply(*_batch(scenes), params) for m in MODES}
    for k, scene in enumerate(scenes):
        image, mask, cam = _albumentations_replay(scene, k, drawn)
        ref = _reference([], image, mask, cam)
        for mode, (out, out_mask, out_cam) in outs.items():
            diff = _levels(out[k], ref["image"])
            assert diff.mean() <= (2.5 if drawn["jitter"][k] else 0.3), (mode, k, diff.mean())
            _assert_labels_match(out_mask[k, 0], mask)
            _assert_labels_match(out_cam[k, 0], cam)
    for a, b in zip(outs["index"], outs["where"]):
        assert torch.allclose(a, b, atol=1e-4), "row selection modes disagree"


# --- the released code's settings: normalise first, reflected border, hue range ---------------

NORMALIZE = A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD, max_pixel_value=255.0)
# A non-degenerate set: at exactly ±45° some sample points sit on pixel edges, where OpenCV and
# grid_sample round a nearest-neighbour label differently (see the module docstring).
REFLECT_ANGLES = [-90.0, -47.3, 13.7, 44.9, 90.0, 171.0]


def _cfg(**fields) -> AugmentConfig:
    """NO_AUG with the given keys set."""
    return AugmentConfig(**{**NO_AUG.model_dump(), **fields})


def _normalised(image: np.ndarray) -> np.ndarray:
    return NORMALIZE(image=image)["image"]


@pytest.mark.parametrize("normalise", ["last", "first"])
def test_reflected_border_leaves_no_black_corners_where_constant_does(normalise):
    size = 32
    image = np.empty((size, size, 3), np.uint8)
    image[:] = (200, 150, 120)  # uniform: a mirrored border is the same colour
    mask = np.ones((size, size), np.uint8)
    batch = _batch([(image, mask, mask.astype(np.float32))])
    params = _params(1, rotate=True, angle=[45.0])  # the corners come from outside the frame
    colour = torch.from_numpy(_normalised(image)[0, 0])
    # The constant border is 0 of the image being rotated: black, or the mean once normalised.
    fill = normalize(torch.zeros(1, 3, 1, 1))[0, :, 0, 0] if normalise == "last" else 0.0
    corners = (slice(None), [0, 0, -1, -1], [0, -1, 0, -1])
    for border in ("constant", "reflect"):
        cfg = _cfg(rotate_border=border, normalise=normalise)
        out, out_mask, out_cam = BatchAugment(cfg).apply(*batch, params)
        if border == "constant":
            assert torch.allclose(out[0][corners].T, torch.as_tensor(fill).expand(4, 3), atol=1e-5)
            assert out_mask[0][corners].eq(0).all() and out_cam[0][corners].eq(0).all()
        else:
            assert torch.allclose(out[0], colour.view(3, 1, 1).expand_as(out[0]), atol=1e-4)
            assert out_mask.eq(1).all() and out_cam.eq(1).all(), "mask and CAM are mirrored too"


@pytest.mark.parametrize("normalise", ["last", "first"])
@pytest.mark.parametrize("mode", MODES)
def test_reflected_rotation_matches_albumentations(mode, normalise):
    """BORDER_REFLECT_101 (mirror about the edge pixels) for image, mask and CAM, on square and
    non-square frames, on uint8 (normalise last) and normalised float images (first)."""
    cfg = _cfg(rotate_border="reflect", normalise=normalise)
    square = [_scene(100 + s) for s in range(len(REFLECT_ANGLES))]
    wide = [tuple(x[8:48].copy() for x in _scene(110 + s, 56)) for s in range(2)]  # 40 × 56
    for scenes, angles in ((square, REFLECT_ANGLES), (wide, [37.0, -118.0])):
        params = _params(len(angles), rotate=True, angle=angles)
        image, mask, cam = BatchAugment(cfg, row_selection=mode).apply(*_batch(scenes), params)
        for k, (angle, (i, m, c)) in enumerate(zip(angles, scenes)):
            rotate = A.Rotate(
                limit=(angle, angle), p=1, border_mode=cv2.BORDER_REFLECT_101, mask_interpolation=0
            )
            steps = [rotate, NORMALIZE] if normalise == "last" else [NORMALIZE, rotate]
            ref = A.Compose(steps, additional_targets={"cam": "mask"})(image=i, mask=m, cam=c)
            diff = _levels(image[k], ref["image"])
            mean_limit, max_limit = (0.3, 1.0) if normalise == "last" else (0.01, 0.05)
            assert diff.mean() <= mean_limit and diff.max() <= max_limit, (angle, diff.max())
            _assert_labels_match(mask[k, 0], ref["mask"])
            _assert_labels_match(cam[k, 0], ref["cam"])


@pytest.mark.parametrize("hue", [0.0, 0.2, 0.5])
def test_hue_shifts_are_drawn_within_the_configured_range(hue):
    cfg = AugmentConfig(hue=hue)
    drawn = BatchAugment(cfg).sample_params(20_000, torch.Generator().manual_seed(0)).hue
    assert drawn.abs().max() <= hue
    assert drawn.max() - drawn.min() >= 0.95 * 2 * hue  # and the whole range is used
    # The loader path draws from the same range.
    jitter = build_train_transform(cfg, seed=0).transforms[-1]
    assert isinstance(jitter, A.ColorJitter) and jitter.hue == (-hue, hue)
    assert all(abs(jitter.get_params()["hue"]) <= hue for _ in range(200))
    with pytest.raises(ValueError, match="less than or equal to 0.5"):
        AugmentConfig(hue=0.6)  # albumentations' own bound: half a turn


# (brightness, contrast, saturation, hue, order): factor 1 (and contrast 0) are skipped, clip
# included, by albumentations on floats; saturation clips to [0, 1] even at 1; hue never clips.
FLOAT_JITTER_CASES = [
    (1.0, 0.85, 1.0, 0.0, [0, 1, 2, 3]),  # brightness 1 must not clip before contrast
    (1.15, 1.0, 1.1, 0.0, [1, 0, 2, 3]),
    (1.0, 0.0, 1.2, 0.2, [1, 3, 0, 2]),  # contrast 0: the flat, unclipped mean grey
    (1.0, 1.0, 1.0, 0.13, [3, 0, 1, 2]),  # hue on the raw normalised image, then saturation
    (1.1, 0.9, 1.05, 0.0, [3, 0, 1, 2]),  # hue 0 leaves it alone (OpenCV's HSV would not)
    (0.9, 1.1, 0.8, -0.4, [2, 3, 1, 0]),
    (1.2, 0.8, 1.05, 0.5, [0, 3, 2, 1]),
]


@pytest.mark.parametrize("mode", MODES)
def test_jitter_on_normalised_images_follows_albumentations_float_rules(mode):
    """normalise first: ColorJitter acts on the normalised image (values about -2.1…2.6), with
    albumentations 2.0.8's float32 clipping and OpenCV's float HSV."""
    n = len(FLOAT_JITTER_CASES)
    scenes = [_scene(120 + s) for s in range(n)]
    b, c, s, h, orders = (list(x) for x in zip(*FLOAT_JITTER_CASES))
    params = _params(n, jitter=True, brightness=b, contrast=c, saturation=s, hue=h, order=orders)
    cfg = _cfg(normalise="first")
    out = BatchAugment(cfg, row_selection=mode).apply(*_batch(scenes), params)[0]
    for k, (image, _, _) in enumerate(scenes):
        kw = {"brightness": b[k], "contrast": c[k], "saturation": s[k], "hue": h[k]}
        ref = A.ColorJitter().apply(_normalised(image), **kw, order=orders[k])
        assert _levels(out[k], ref).max() <= 0.01, f"case {k}: {FLOAT_JITTER_CASES[k]}"


def test_normalise_first_changes_only_what_the_jitter_sees():
    """Flips commute with the per-channel normalisation: both orders agree. Jitter does not: on
    the normalised image albumentations clips every step to [0, 1]."""
    scenes = [_scene(130 + s) for s in range(4)]
    flips = _params(4, hflip=[True, False, True, False], vflip=[False, True, True, False])
    outs = {
        order: BatchAugment(_cfg(normalise=order)).apply(*_batch(scenes), flips)
        for order in ("last", "first")
    }
    for a, b in zip(outs["last"], outs["first"]):
        assert torch.allclose(a, b, atol=1e-5)

    jitter = _params(4, jitter=True, brightness=1.1, contrast=0.9, saturation=1.1, hue=0.1)
    last, first = (
        BatchAugment(_cfg(normalise=o)).apply(*_batch(scenes), jitter)[0] for o in ("last", "first")
    )
    assert (last - first).abs().amax(dim=(1, 2, 3)).min() > 0.5  # every sample differs
    assert last.min() < -1 and 0 <= first.min() and first.max() <= 1


@pytest.mark.parametrize("mode", MODES)
def test_released_code_pipeline_matches_albumentations_with_known_parameters(mode):
    """normalise first, reflected border, hue within ±0.2 — the released code's A.Compose
    (Normalize, flips, Rotate, ColorJitter; our flips follow the rotation, see BatchAugment)."""
    n = 10
    scenes = [_scene(140 + s) for s in range(n)]
    # Both kinds of sample, whatever the draw: jittered (0, 1) and not (2, 3).
    params, drawn = _random_params(
        n, seed=11, hue_range=(-0.2, 0.2), jitter={0: True, 1: True, 2: False, 3: False}
    )
    cfg = _cfg(normalise="first", rotate_border="reflect", hue=0.2)
    out, out_mask, out_cam = BatchAugment(cfg, row_selection=mode).apply(*_batch(scenes), params)
    for k, scene in enumerate(scenes):
        image, mask, cam = _albumentations_replay(
            scene, k, drawn, border=cv2.BORDER_REFLECT_101, first=True
        )
        diff = _levels(out[k], image)
        assert diff.max() <= 0.05, (k, diff.mean(), diff.max())
        _assert_labels_match(out_mask[k, 0], mask)
        _assert_labels_match(out_cam[k, 0], cam)


# --- probabilities and seeding ------------------------------------------------------------------


def test_sampled_parameters_follow_the_config_and_the_seed():
    cfg = AugmentConfig(rotate_p=0.2, rotate_limit=30, hflip_p=0.5, vflip_p=0.7, color_jitter_p=0.3)
    aug = BatchAugment(cfg)
    p = aug.sample_params(20_000, torch.Generator().manual_seed(0))
    for flag, want in [("rotate", 0.2), ("hflip", 0.5), ("vflip", 0.7), ("jitter", 0.3)]:
        assert abs(getattr(p, flag).float().mean().item() - want) <= 0.03, flag
    assert p.angle.abs().max() <= 30 and p.angle.min() < -29 and p.angle.max() > 29
    assert abs(p.angle.mean().item()) < 1.0
    for name, (lo, hi) in [
        ("brightness", BRIGHTNESS_RANGE),
        ("contrast", CONTRAST_RANGE),
        ("saturation", SATURATION_RANGE),
        ("hue", HUE_RANGE),
    ]:
        values = getattr(p, name)
        assert lo <= values.min() and values.max() <= hi
        assert values.max() - values.min() > 0.95 * (hi - lo), name
    assert torch.equal(p.order.sort(dim=1).values, torch.arange(4).expand(20_000, 4))
    first = p.order[:, 0].bincount(minlength=4).float() / 20_000
    assert torch.allclose(first, torch.full((4,), 0.25), atol=0.03)  # uniform orders

    again = aug.sample_params(20_000, torch.Generator().manual_seed(0))
    other = aug.sample_params(20_000, torch.Generator().manual_seed(1))
    assert all(
        torch.equal(getattr(p, f.name), getattr(again, f.name)) for f in dataclasses.fields(p)
    )
    assert not torch.equal(p.angle, other.angle)


@pytest.mark.parametrize(
    "flag, p",
    [("rotate_p", 0.35), ("hflip_p", 0.5), ("vflip_p", 0.65), ("color_jitter_p", 0.3)],
)
def test_fraction_of_transformed_samples_matches_the_probability(flag, p):
    torch.manual_seed(0)
    n, size = 3000, 8
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)
    masks = torch.zeros(n, size, size, dtype=torch.uint8)
    aug = BatchAugment(AugmentConfig(**{**NO_AUG.model_dump(), flag: p}))
    out = aug(images, masks, None, torch.Generator().manual_seed(1))[0]
    changed = (out - normalize(images)).abs().amax(dim=(1, 2, 3)) > 1e-4
    assert abs(changed.float().mean().item() - p) <= 0.03


def test_invalid_row_selection_lists_the_valid_names():
    with pytest.raises(ValueError, match="auto, index, where"):
        BatchAugment(NO_AUG, row_selection="mask")


def test_apply_leaves_its_inputs_untouched():
    images, masks, cams = _batch([_scene(s) for s in range(4)])
    images = images.float()
    copies = [t.clone() for t in (images, masks, cams)]
    cfg = AugmentConfig(rotate_p=1, hflip_p=1, vflip_p=1, color_jitter_p=1)
    for mode in MODES:
        BatchAugment(cfg, row_selection=mode)(images, masks, cams, torch.Generator())
        assert all(torch.equal(a, b) for a, b in zip((images, masks, cams), copies))


# --- DeviceBatches ------------------------------------------------------------------------------


def _data(n: int = 22, size: int = 32) -> DecodedData:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    masks = (rng.random((n, size, size)) > 0.7).astype(np.uint8)
    centres = np.arange(n) % 6 + 1
    names = [f"f{i}.jpg" for i in range(n)]
    return DecodedData(images, masks, None, centres, ["P"] * n, names, size, "k", "h")


LABELS = {1: 0, 2: 1, 3: 2, 4: 3, 5: 4}  # centre 6 held out: label -1


def test_device_batches_cover_the_split_once_per_epoch_in_a_seeded_order():
    data = _data()
    split = np.array([0, 2, 3, 5, 7, 8, 11, 12, 13, 17, 19])
    cams = np.random.default_rng(1).random((len(split), 32, 32)).astype(np.float16)
    loader = DeviceBatches(
        data,
        split,
        batch_size=4,
        augment=AugmentConfig(),
        centre_labels=LABELS,
        cams=cams,
        shuffle=True,
        seed=5,
    )
    assert len(loader) == 3
    epochs = []
    for _ in range(2):
        batches = list(loader)
        assert [len(b["index"]) for b in batches] == [4, 4, 3]
        for b in batches:
            n = len(b["index"])
            assert b["image"].shape == (n, 3, 32, 32) and b["image"].dtype == torch.float32
            assert b["mask"].shape == (n, 1, 32, 32) and b["mask"].dtype == torch.float32
            assert b["cam"].shape == (n, 1, 32, 32) and b["cam"].dtype == torch.float32
            assert b["label"].dtype == torch.long and b["index"].dtype == torch.long
            assert set(b["mask"].unique().tolist()) <= {0.0, 1.0}
            want = [LABELS.get(int(data.centres[i]), -1) for i in b["index"]]
            assert b["label"].tolist() == want
        order = torch.cat([b["index"] for b in batches]).tolist()
        assert sorted(order) == split.tolist()
        epochs.append((order, batches))
    assert epochs[0][0] != epochs[1][0], "each pass reshuffles"

    loader.reseed(5)
    replay = list(loader)
    assert torch.cat([b["index"] for b in replay]).tolist() == epochs[0][0]
    for a, b in zip(replay, epochs[0][1]):
        assert all(torch.equal(a[k], b[k]) for k in a), "same seed, same augmentations"

    dropped = DeviceBatches(data, split, batch_size=4, drop_last=True, shuffle=True)
    assert len(dropped) == 2 and len(list(dropped)) == 2


def test_eval_batches_equal_the_albumentations_dataloader():
    data = _data()
    split = np.array([1, 4, 6, 9, 10, 14, 16])
    cams = np.random.default_rng(2).random((len(split), 32, 32)).astype(np.float16)
    ours = DeviceBatches(data, split, batch_size=3, centre_labels=LABELS, cams=cams)
    ds = SegmentationDataset(data, split, centre_labels=LABELS, cams=cams)
    reference = DataLoader(ds, batch_size=3)
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference, strict=True):
        assert a.keys() == b.keys()
        assert torch.allclose(a["image"], b["image"], atol=1e-5)
        for key in ("mask", "cam", "label", "index"):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def test_cams_stay_aligned_with_their_frames():
    data = _data()
    split = np.array([3, 8, 9, 15, 21, 0])
    cams = np.stack([np.full((32, 32), k / 10, np.float32) for k in range(len(split))])
    cfg = AugmentConfig(rotate_p=0, hflip_p=0.5, vflip_p=0.5, color_jitter_p=1)
    loader = DeviceBatches(data, split, batch_size=4, augment=cfg, cams=cams, shuffle=True)
    position = {int(i): k for k, i in enumerate(split)}
    for batch in loader:
        for index, cam in zip(batch["index"].tolist(), batch["cam"]):
            assert torch.all(cam == torch.tensor(position[index] / 10, dtype=torch.float32))


def test_shared_device_data_serves_several_splits():
    data = _data()
    shared = DeviceData.from_decoded(data)
    assert shared.images.shape == (len(data), 3, 32, 32) and shared.images.dtype == torch.uint8
    assert torch.equal(shared.images[5].permute(1, 2, 0), torch.from_numpy(data.images[5]))
    train = DeviceBatches(shared, [0, 1, 2], batch_size=2, augment=AugmentConfig())
    val = DeviceBatches(shared, [3, 4], batch_size=2)
    assert train.data is val.data
    assert torch.cat([b["index"] for b in val]).tolist() == [3, 4]


def test_device_batches_reject_bad_arguments():
    data = _data()
    with pytest.raises(ValueError, match="cams has 2 rows for 3 frames"):
        DeviceBatches(data, [0, 1, 2], batch_size=2, cams=np.zeros((2, 32, 32), np.float32))
    with pytest.raises(ValueError, match="cams must be"):
        DeviceBatches(data, [0, 1], batch_size=2, cams=np.zeros((2, 16, 16), np.float32))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 22\)"):
        DeviceBatches(data, [0, 22], batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        DeviceBatches(data, [0], batch_size=0)
    with pytest.raises(ValueError, match="not on the requested"):
        DeviceBatches(DeviceData.from_decoded(data), [0], batch_size=1, device="meta")


def test_engine_evaluates_device_batches_like_the_dataloader():
    from trainables.engine import Runtime, evaluate
    from trainables.models import build_model

    torch.manual_seed(0)
    data = _data(12)
    split = np.arange(12)
    model = build_model("unet", variant="tiny").eval()
    runtime = Runtime(torch.device("cpu"))
    ours = evaluate(model, DeviceBatches(data, split, batch_size=4), runtime)
    ds = SegmentationDataset(data, split)
    reference = evaluate(model, DataLoader(ds, batch_size=4), runtime)
    assert np.array_equal(ours.indices, reference.indices)
    for key, value in reference.mean.items():
        assert math.isclose(ours.mean[key], value, rel_tol=1e-4, abs_tol=1e-6), key


# --- GPU ----------------------------------------------------------------------------------------


# The released code's settings (normalise first, reflected border, hue 0.2) as a second case.
RELEASED = {"normalise": "first", "rotate_border": "reflect", "hue": 0.2}


@pytest.mark.gpu
@pytest.mark.parametrize("settings", [{}, RELEASED], ids=["default", "released"])
def test_cuda_matches_cpu_for_the_same_parameters(settings):
    scenes = [_scene(80 + s) for s in range(8)]
    cfg = AugmentConfig(rotate_p=0.7, hflip_p=0.5, vflip_p=0.5, color_jitter_p=0.7, **settings)
    aug = BatchAugment(cfg)
    params = aug.sample_params(8, torch.Generator().manual_seed(0))
    cpu = aug.apply(*_batch(scenes), params)
    cuda = aug.apply(*(t.cuda() for t in _batch(scenes)), params.to("cuda"))
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    assert ((cpu[0] - cuda[0].cpu()).abs() * std).mean() < 0.05
    for a, b in zip(cpu[1:], cuda[1:]):
        assert (a != b.cpu()).float().mean() <= 0.002


@pytest.mark.gpu
@pytest.mark.parametrize("settings", [{}, RELEASED], ids=["default", "released"])
def test_cuda_batches_never_wait_for_the_host(settings):
    data = _data()
    cams = np.random.default_rng(3).random((len(data), 32, 32)).astype(np.float16)
    loader = DeviceBatches(
        data,
        np.arange(len(data)),
        batch_size=4,
        augment=AugmentConfig(color_jitter_p=0.5, **settings),
        cams=cams,
        shuffle=True,
        device="cuda",
    )
    val = DeviceBatches(loader.data, [1, 2, 3], batch_size=2)
    list(loader)  # first pass builds the per-device constants (one copy each)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host synchronisation now raises
    try:
        batches = list(loader) + list(val)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(b["image"].is_cuda and b["index"].is_cuda for b in batches)
