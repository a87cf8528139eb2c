"""Loader, data check, decoded cache, splits, dataset and augmentation."""

from __future__ import annotations

import csv
import os
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import SYNTH_PER_CENTRE, write_frame
from trainables.data.augment import AugmentConfig, build_train_transform
from trainables.data.cache import load_or_build
from trainables.data.check import check_dataset
from trainables.data.dataset import SegmentationDataset
from trainables.data.polypgen import DatasetError, index_polypgen
from trainables.data.splits import leave_one_centre_out
from trainables.data.synthetic import generate

# --- loader -------------------------------------------------------------------------------------


def test_loader_reproduces_generator_records(tmp_path):
    records = generate(tmp_path, per_centre=3, size=(48, 40), seed=5)
    manifest = index_polypgen(tmp_path)
    assert manifest.patients_known and not manifest.notes
    assert manifest.has_overlays
    got = {(r.image, r.mask, r.overlay, r.centre, r.patient) for r in manifest.records}
    want = {(r.image, r.mask, r.overlay, r.centre, r.patient) for r in records}
    assert got == want
    assert manifest.centres == [1, 2, 3, 4, 5, 6]


def test_csv_manifest_overrides_layout(tmp_path):
    img, mask = write_frame(tmp_path, 1, "a")
    img2, mask2 = write_frame(tmp_path, 2, "b")
    csv_path = tmp_path / "m.csv"
    csv_path.write_text(
        "image,mask,centre,patient\n"
        f"{img.relative_to(tmp_path)},{mask.relative_to(tmp_path)},C4,pat-9\n"
        f"{img2},{mask2},2,pat-1\n"
    )
    manifest = index_polypgen(tmp_path / "nowhere", manifest=csv_path)
    assert [(r.centre, r.patient) for r in manifest.records] == [(2, "pat-1"), (4, "pat-9")]


def test_csv_manifest_errors_name_row_and_column(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("image,mask,centre\nx.jpg,x_mask.jpg,1\n")
    with pytest.raises(DatasetError, match=r"bad.csv: missing column\(s\) \['patient'\]"):
        index_polypgen(tmp_path, manifest=bad)
    rows = tmp_path / "rows.csv"
    rows.write_text("image,mask,centre,patient\nnope.jpg,nope_mask.jpg,X,p\nnope.jpg,m.jpg,1,\n")
    with pytest.raises(DatasetError) as err:
        index_polypgen(tmp_path, manifest=rows)
    text = str(err.value)
    assert "rows.csv:2: centre 'X' is not a centre number" in text
    assert "rows.csv:3: image" in text and "does not exist" in text
    assert "rows.csv:3: empty patient" in text


def test_names_without_patient_ids_fall_back_to_one_patient_per_frame(tmp_path):
    write_frame(tmp_path, 1, "100H0050")
    write_frame(tmp_path, 1, "100H0051")
    manifest = index_polypgen(tmp_path)
    assert not manifest.patients_known
    assert {r.patient for r in manifest.records} == {"100H0050", "100H0051"}
    assert "'100H0050' carry no patient id" in manifest.unknown_patients[1]


def test_structural_problems_are_all_reported_together(tmp_path):
    write_frame(tmp_path, 1, "C1_P001_0001")
    write_frame(tmp_path, 2, "C1_P001_0001")  # same file name in two centres
    img, mask = write_frame(tmp_path, 3, "C3_P001_0001")
    mask.unlink()  # image without mask
    (tmp_path / "data_C4" / "images_C4").mkdir(parents=True)  # empty centre, no masks folder
    write_frame(tmp_path, 5, "C5_P001_0001")
    (tmp_path / "data_C5" / "images_C5" / "C5_P001_0001.png").write_bytes(b"x")  # dup stem
    with pytest.raises(DatasetError) as err:
        index_polypgen(tmp_path)
    text = str(err.value)
    assert f"{img}: no mask" in text
    assert "images_C4: centre C4 has no images" in text
    assert "masks_C4: missing folder" in text
    assert "duplicate name 'C5_P001_0001'" in text
    assert "duplicate file name 'C1_P001_0001.jpg' in centres [1, 2]" in text
    assert len(err.value.problems) == 5


def test_missing_root_and_non_polypgen_root(tmp_path):
    with pytest.raises(DatasetError, match="data root does not exist"):
        index_polypgen(tmp_path / "missing")
    with pytest.raises(DatasetError, match="no data_C<k> centre folders"):
        index_polypgen(tmp_path)


# --- data check ---------------------------------------------------------------------------------


def test_check_summarises_synthetic_data(synth_root):
    report = check_dataset(synth_root)
    assert report.ok, report.problems
    assert [c.centre for c in report.centres] == [1, 2, 3, 4, 5, 6]
    assert all(c.images == SYNTH_PER_CENTRE for c in report.centres)
    assert all(1 <= c.patients <= SYNTH_PER_CENTRE for c in report.centres)
    assert any(c.mean_polyp_area > 0 for c in report.centres)
    text = report.format()
    assert "no problems found" in text and "C6" in text


def test_check_lists_decode_problems_at_once(tmp_path):
    write_frame(tmp_path, 1, "C1_P001_0001")
    img, _ = write_frame(tmp_path, 1, "C1_P001_0002")
    img.write_bytes(img.read_bytes()[:60])  # truncated JPEG
    _, mask = write_frame(tmp_path, 2, "C2_P001_0001", size=(32, 32), mask_size=(30, 32))
    report = check_dataset(tmp_path)
    assert not report.ok
    text = "\n".join(report.problems)
    assert f"{img}: unreadable or corrupt image" in text or f"{img}: unreadable image" in text
    assert f"{mask}: mask size (30, 32) differs from image size (32, 32)" in text
    assert len(report.problems) == 2


# --- decoded cache ------------------------------------------------------------------------------


def test_cache_round_trip_and_reload_is_fast(synth_root, tmp_path):
    manifest = index_polypgen(synth_root)
    data, hit = load_or_build(manifest, 32, tmp_path)
    assert not hit
    assert data.images.shape == (6 * SYNTH_PER_CENTRE, 32, 32, 3) and data.images.dtype == np.uint8
    assert set(np.unique(data.masks)) <= {0, 1}
    assert data.overlays is not None and data.overlays.any()
    t0 = time.perf_counter()
    again, hit = load_or_build(manifest, 32, tmp_path)
    reload_s = time.perf_counter() - t0
    assert hit and reload_s < 0.5  # milliseconds in practice; generous for a loaded CI box
    np.testing.assert_array_equal(again.images, data.images)
    np.testing.assert_array_equal(again.masks, data.masks)
    assert again.dataset_hash == data.dataset_hash and again.patients == data.patients


def test_cache_invalidated_when_a_source_file_changes(tmp_path):
    root = tmp_path / "data"
    generate(root, per_centre=2, size=(40, 40), seed=1)
    manifest = index_polypgen(root)
    first, _ = load_or_build(manifest, 32, tmp_path / "cache")
    mask_path = manifest.records[0].mask
    from PIL import Image

    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(mask_path)
    st = mask_path.stat()
    os.utime(mask_path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # coarse-mtime safety
    second, hit = load_or_build(index_polypgen(root), 32, tmp_path / "cache")
    assert not hit
    assert second.key != first.key and second.dataset_hash != first.dataset_hash
    assert second.masks[0].all()


def test_cache_build_lists_every_bad_file(tmp_path):
    write_frame(tmp_path, 1, "C1_P001_0001", mask_size=(16, 16))
    img, _ = write_frame(tmp_path, 2, "C2_P001_0001")
    img.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError) as err:
        load_or_build(index_polypgen(tmp_path), 32, tmp_path / "cache")
    assert len(err.value.problems) == 2
    cache = tmp_path / "cache"  # no half-written entry (the entry's lock file may remain)
    assert not cache.exists() or all(p.name.endswith(".lock") for p in cache.iterdir())


# --- splits -------------------------------------------------------------------------------------


@st.composite
def manifests(draw):
    n_centres = draw(st.integers(2, 6))
    centres, patients = [], []
    for c in range(1, n_centres + 1):
        for p in range(draw(st.integers(1, 12))):
            frames = draw(st.integers(1, 6))
            centres += [c] * frames
            patients += [f"P{p}"] * frames
    held_out = draw(st.integers(1, n_centres))
    return np.array(centres), patients, held_out


@settings(max_examples=150, deadline=None)
@given(manifests(), st.integers(0, 2**16))
def test_split_invariants(manifest, seed):
    centres, patients, held_out = manifest
    split = leave_one_centre_out(centres, patients, held_out, seed=seed)
    parts = [split.train, split.val, split.test_in, split.test_out]
    every = np.concatenate(parts)
    assert sorted(every.tolist()) == list(range(len(centres)))  # each frame exactly once
    assert set(centres[split.test_out]) == {held_out}
    for part in parts[:3]:
        assert held_out not in set(centres[part])
    owner = {}
    for name, part in zip(("train", "val", "test_in"), parts[:3]):
        for i in part:
            key = (centres[i], patients[i])
            assert owner.setdefault(key, name) == name  # no patient in two splits
    again = leave_one_centre_out(centres, patients, held_out, seed=seed)
    for a, b in zip(parts, [again.train, again.val, again.test_in, again.test_out]):
        np.testing.assert_array_equal(a, b)


def test_split_fractions_and_representation():
    rng = np.random.default_rng(0)
    centres, patients = [], []
    for c in range(1, 7):
        for p in range(40):
            n = int(rng.integers(2, 8))
            centres += [c] * n
            patients += [f"P{p}"] * n
    centres = np.array(centres)
    split = leave_one_centre_out(centres, patients, 3, seed=0)
    n_in = (centres != 3).sum()
    assert abs(len(split.train) / n_in - 0.8) < 0.03
    assert abs(len(split.val) / n_in - 0.1) < 0.03
    for part in (split.train, split.val, split.test_in):
        assert set(centres[part]) == {1, 2, 4, 5, 6}
    assert split.centre_labels(centres) == {1: 0, 2: 1, 4: 2, 5: 3, 6: 4}
    other = leave_one_centre_out(centres, patients, 3, seed=1)
    assert not np.array_equal(split.val, other.val)


def test_split_rejects_absent_centre_and_writes_csv(tmp_path):
    centres, patients = np.array([1, 1, 2, 2]), ["a", "b", "c", "d"]
    with pytest.raises(
        ValueError, match=r"held_out_centre 7 is not in the data \(centres: \[1, 2\]\)"
    ):
        leave_one_centre_out(centres, patients, 7)
    split = leave_one_centre_out(centres, patients, 2)
    path = tmp_path / "split.csv"
    split.to_csv(path, ["w.jpg", "x.jpg", "y.jpg", "z.jpg"], centres, patients)
    rows = list(csv.DictReader(open(path)))
    assert [r["split"] for r in rows[2:]] == ["test_out", "test_out"]
    assert {r["image"] for r in rows} == {"w.jpg", "x.jpg", "y.jpg", "z.jpg"}


# --- dataset and augmentation -------------------------------------------------------------------


def _marker_data(size=32):
    from trainables.data.cache import DecodedData

    images = np.zeros((1, size, size, 3), np.uint8)
    masks = np.zeros((1, size, size), np.uint8)
    images[0, 7:10, 9:12] = 255  # a 3×3 marker, off-centre so every transform moves it
    masks[0, 7:10, 9:12] = 1
    return DecodedData(images, masks, None, np.array([2]), ["P1"], ["a.jpg"], size, "k", "h")


def test_augmentation_moves_marker_identically_in_image_mask_and_cam():
    data = _marker_data()
    cams = np.zeros((1, 32, 32), np.float32)
    cams[0, 7:10, 9:12] = 1.0
    cfg = AugmentConfig(rotate_p=1.0, rotate_limit=90, hflip_p=0.5, vflip_p=0.5, color_jitter_p=0)
    moved = 0
    for seed in range(12):
        ds = SegmentationDataset(
            data, [0], build_train_transform(cfg, seed=seed), centre_labels={2: 0}, cams=cams
        )
        item = ds[0]
        bright = item["image"].sum(0) > item["image"].sum(0).median() + 1
        mask, cam = item["mask"][0] > 0.5, item["cam"][0] > 0.5
        assert mask.any() or not bright.any()
        assert bool((mask == cam).all()), f"seed {seed}: mask and CAM diverged"
        # The image's brightest pixels sit where the mask marker went (bilinear blur allowed).
        ys, xs = np.nonzero(mask.numpy())
        if len(ys):
            peak = np.unravel_index(int(item["image"].sum(0).argmax()), (32, 32))
            assert min(abs(peak[0] - y) + abs(peak[1] - x) for y, x in zip(ys, xs)) <= 1
            moved += (ys.min(), xs.min()) != (7, 9)
        assert item["label"].item() == 0
    assert moved >= 6  # the transforms really moved things


def test_colour_jitter_touches_the_image_only():
    data = _marker_data()
    data.images[0] = (150, 100, 90)  # jitter cannot change black, so use a mucosa-like colour
    cams = np.full((1, 32, 32), 0.25, np.float32)
    cfg = AugmentConfig(rotate_p=0, hflip_p=0, vflip_p=0, color_jitter_p=1.0)
    item = SegmentationDataset(data, [0], build_train_transform(cfg, seed=0), cams=cams)[0]
    plain = SegmentationDataset(data, [0], cams=cams)[0]
    assert not np.allclose(item["image"].numpy(), plain["image"].numpy())
    assert np.array_equal(item["mask"].numpy(), plain["mask"].numpy())
    assert np.allclose(item["cam"].numpy(), 0.25)
    assert item["label"].item() == -1  # centre 2 is not a training centre here


@pytest.mark.parametrize("view", ["contiguous", "flipped", "memmap"])
def test_normalisation_equals_albumentations_normalize(view, tmp_path):
    """The fused normalise-to-CHW the dataset applies is albumentations' Normalize, channels
    first, whatever layout the transform hands it (flips can return strided views; the cache
    is a read-only memmap)."""
    import albumentations as A

    from trainables.data.augment import IMAGENET_MEAN, IMAGENET_STD, to_normalized_chw

    image = np.random.default_rng(3).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    if view == "flipped":
        image = image[::-1, ::-1]
    elif view == "memmap":
        np.save(tmp_path / "x.npy", image)
        image = np.load(tmp_path / "x.npy", mmap_mode="r")
    reference = A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)(image=np.array(image))["image"]
    ours = to_normalized_chw(image)
    assert ours.shape == (3, 40, 56) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference.transpose(2, 0, 1), rtol=0, atol=1e-5)


# --- the released code's augmentation settings on the loader path -------------------------------


def _colour_data(size=32):
    """_marker_data with a smooth, saturated frame: jitter and rotation change every pixel."""
    import cv2

    data = _marker_data(size)
    coarse = np.random.default_rng(5).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    data.images[0] = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    return data


def _replay(cfg: AugmentConfig, seed: int, **inputs) -> dict:
    """What build_train_transform(cfg, seed) does to ``inputs``, with the parameters it drew."""
    import albumentations as A

    transforms = build_train_transform(cfg, seed=seed).transforms
    pipeline = A.Compose(
        transforms, additional_targets={"cam": "mask"}, seed=seed, save_applied_params=True
    )
    out = pipeline(**inputs)
    return {**out, "applied": dict(out["applied_transforms"])}


def test_normalise_first_on_the_loader_is_normalising_then_augmenting():
    """The dataset takes the transform's normalised float image as it is (never normalising it
    twice), and that image is: normalise, then rotate with a mirrored border, flip and jitter
    the float image — recomputed here from the drawn parameters with OpenCV and albumentations'
    ColorJitter functions."""
    import albumentations as A
    import cv2

    from trainables.data.augment import to_normalized_chw

    data = _colour_data()
    image, mask = data.images[0], data.masks[0]
    cams = mask[None].astype(np.float32) * 0.5
    cfg = AugmentConfig(
        rotate_p=1, color_jitter_p=1, normalise="first", rotate_border="reflect", hue=0.2
    )
    flipped = set()
    for seed in range(4):
        item = SegmentationDataset(data, [0], build_train_transform(cfg, seed=seed), cams=cams)[0]
        applied = _replay(cfg, seed, image=image, mask=mask, cam=cams[0])["applied"]
        x = to_normalized_chw(image).transpose(1, 2, 0)  # our own normalisation, not A's
        m, c = mask, cams[0]
        matrix = applied["Rotate"]["matrix"][:2]
        x, m, c = (
            cv2.warpAffine(a, matrix, (32, 32), flags=flag, borderMode=cv2.BORDER_REFLECT_101)
            for a, flag in ((x, cv2.INTER_LINEAR), (m, cv2.INTER_NEAREST), (c, cv2.INTER_NEAREST))
        )
        for name, axis in (("HorizontalFlip", 1), ("VerticalFlip", 0)):
            if name in applied:
                flipped.add(name)
                x, m, c = (np.flip(a, axis) for a in (x, m, c))
        keys = ("brightness", "contrast", "saturation", "hue", "order")
        jitter = {k: applied["ColorJitter"][k] for k in keys}
        assert abs(jitter["hue"]) <= 0.2
        x = A.ColorJitter().apply(np.ascontiguousarray(x), **jitter)
        np.testing.assert_allclose(item["image"].numpy(), x.transpose(2, 0, 1), atol=1e-4)
        assert np.array_equal(item["mask"][0].numpy(), m)
        assert np.array_equal(item["cam"][0].numpy(), c)
        # albumentations clips the jitter on floats to [0, 1]: of the normalised image here
        assert 0 <= item["image"].min() and item["image"].max() <= 1

        last = cfg.model_copy(update={"normalise": "last"})
        plain = SegmentationDataset(data, [0], build_train_transform(last, seed=seed))[0]
        assert plain["image"].min() < -1, "normalise last jitters the uint8 image instead"
    assert flipped == {"HorizontalFlip", "VerticalFlip"}


@pytest.mark.parametrize("border", ["constant", "reflect"])
def test_loader_rotation_border(border):
    """A rotated uniform frame: constant leaves black corners (mask and CAM 0 there), reflect
    mirrors the frame into them, for image, mask and CAM alike."""
    from trainables.data.augment import to_normalized_chw

    data = _marker_data()
    data.images[0] = (200, 150, 120)
    data.masks[0] = 1
    cams = np.ones((1, 32, 32), np.float32)
    black = to_normalized_chw(np.zeros((1, 1, 3), np.uint8))[:, 0, 0]
    colour = to_normalized_chw(data.images[0])
    cfg = AugmentConfig(rotate_p=1, hflip_p=0, vflip_p=0, color_jitter_p=0, rotate_border=border)
    for seed in range(4):
        item = SegmentationDataset(data, [0], build_train_transform(cfg, seed=seed), cams=cams)[0]
        image = item["image"].numpy()
        if border == "constant":
            np.testing.assert_allclose(image[:, 0, 0], black, atol=1e-5)
            assert item["mask"][0, 0, 0] == 0 and item["cam"][0, 0, 0] == 0
        else:
            np.testing.assert_allclose(image, colour, atol=1e-4)
            assert item["mask"].eq(1).all() and item["cam"].eq(1).all()


def test_authors_code_recipe_sets_the_released_augmentation(capsys):
    from pathlib import Path

    from sweeps.cli import main
    from sweeps.spec import load_spec

    path = Path(__file__).parents[1] / "sweeps" / "authors-code.yaml"
    assert main(["validate", "--file-only", str(path)]) == 0
    assert "authors-code.yaml: ok" in capsys.readouterr().out
    augment = load_spec(path, environment=False).trial_config({}).train.augment
    assert augment == AugmentConfig(normalise="first", rotate_border="reflect", hue=0.2)
