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
    return out, generate(out, per_centre=6, size=SIZE, seed=0, naming="camsweep")


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
    assert manifest["naming"] == "camsweep"


def test_patients_have_2_to_10_frames_numbered_from_zero(tmp_path):
    records = generate(
        tmp_path, per_centre=57, size=(32, 32), seed=3, centres=(2,), naming="camsweep"
    )
    frames = defaultdict(list)
    for r in records:
        frames[r.patient].append(int(STEM.fullmatch(r.image.stem).group(3)))
    assert len(frames) >= 6
    for patient, numbers in frames.items():
        assert 2 <= len(numbers) <= 10, patient
        assert numbers == list(range(len(numbers)))
    assert sorted(frames) == [f"P{i:03d}" for i in range(1, len(frames) + 1)]


def test_frames_of_a_patient_share_tint(tmp_path):
    records = generate(tmp_path, per_centre=40, size=SIZE, seed=0, centres=(4,), naming="camsweep")
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
    a = generate(tmp_path / "a", per_centre=3, size=SIZE, seed=7, naming="camsweep")
    generate(tmp_path / "b", per_centre=3, size=SIZE, seed=7, naming="camsweep")
    generate(tmp_path / "c", per_centre=3, size=SIZE, seed=8, naming="camsweep")
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
    generate(tmp_path, per_centre=2 if size == SIZE else 1, size=size, seed=2, naming="camsweep")
    assert len(leaks) == (12 if size == SIZE else 6) and leaks == [0] * len(leaks)


def test_overlay_pixels_are_removed_from_polyp_masks(tmp_path, monkeypatch):
    # Real styles rarely reach the central polyps, so cover the left half to force the case.
    def left_half(rng: np.random.Generator, rgb: np.ndarray) -> np.ndarray:
        mask = np.zeros(rgb.shape[:2], np.uint8)
        mask[:, : rgb.shape[1] // 2] = 1
        rgb[mask > 0] = 0
        return mask

    monkeypatch.setitem(synthetic._OVERLAYS, 1, left_half)
    records = generate(tmp_path, per_centre=12, size=SIZE, seed=0, centres=(1,), naming="camsweep")
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
    records = generate(tmp_path, per_centre=2, size=size, seed=1, naming="camsweep")
    for r in records:
        image = cv2.imread(str(r.image))
        assert image.shape == (size[1], size[0], 3)
        assert _binary(r.overlay).mean() > 0.005, r.overlay


def test_scale_sets_counts_from_polypgen_sizes(tmp_path):
    records = generate(tmp_path, scale=0.05, size=(32, 32), seed=0, naming="camsweep")
    counts = {k: sum(r.centre == k for r in records) for k in CENTRES}
    assert counts == {k: round(0.05 * n) for k, n in POLYPGEN_CENTRE_SIZES.items()}
    manifest = json.loads((tmp_path / "synth.json").read_text())
    assert manifest["counts"] == {str(k): v for k, v in counts.items()}


def test_tiny_scale_keeps_one_frame_and_centres_subset(tmp_path):
    records = generate(tmp_path, scale=0.001, size=(32, 32), centres=(2, 5), naming="camsweep")
    assert [r.centre for r in records] == [2, 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data_C2", "data_C5", "synth.json"]


def test_existing_dataset_needs_overwrite(tmp_path):
    generate(tmp_path, per_centre=2, size=(32, 32), centres=(1, 2), naming="camsweep")
    with pytest.raises(FileExistsError, match="overwrite"):
        generate(tmp_path, per_centre=2, size=(32, 32), naming="camsweep")
    generate(tmp_path, per_centre=2, size=(32, 32), centres=(3,), overwrite=True, naming="camsweep")
    # The old centres are gone, so the loader cannot mix two datasets.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data_C3", "synth.json"]


def test_refuses_to_touch_a_foreign_dataset(tmp_path):
    (tmp_path / "data_C1" / "images_C1").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="data_C1"):
        generate(tmp_path, per_centre=2, size=(32, 32), overwrite=True, naming="camsweep")
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
        ({"naming": "PolypGen"}, "'PolypGen'.*valid namings: 'camsweep', 'polypgen'"),
        ({"naming": None}, "None.*valid namings"),
    ],
)
def test_bad_arguments_raise_naming_the_value(tmp_path, kwargs, named):
    kwargs = {"per_centre": 1, "size": (32, 32)} | kwargs
    if "scale" in kwargs and kwargs.get("per_centre") == 1:
        del kwargs["per_centre"]
    with pytest.raises(ValueError, match=named):
        generate(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


# --- polypgen naming ----------------------------------------------------------------------------

PG_FRAMES = 24
SECOND_SIZE = (48, 36)  # 3/4 of SIZE
PG_NAMES = {
    1: re.compile(r"(?P<patient>\d{3})(?P<infix>OLC1|OLCV1)_100H(?P<n>\d{4})"),
    2: re.compile(r"EndoCV2021_(?P<n>\d{6})"),
    3: re.compile(r"C3_EndoCV2021_(?P<n>\d{5})(?P<quirk>_?)"),
    4: re.compile(r"(?P<patient>[1-9]\d*)_endocv2021_positive_(?P<n>[1-9]\d*)"),
    5: re.compile(r"EndoCV2021_C5_(?P<n>\d{8})"),
    6: re.compile(r"EndoCV2021_C6_(?P<n>\d{7})"),
}
PG_FIRST_NUMBER = {1: 1, 2: 1000, 3: 489 - PG_FRAMES // 2, 4: 1, 5: 50000000, 6: 100000}


@pytest.fixture(scope="module")
def pg_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SynthRecord]]:
    out = tmp_path_factory.mktemp("synth_pg")
    return out, generate(out, per_centre=PG_FRAMES, size=SIZE, seed=0, naming="polypgen")


def _number(record: SynthRecord) -> int:
    return int(PG_NAMES[record.centre].fullmatch(record.image.stem).group("n"))


def _by_centre(records: list[SynthRecord]) -> dict[int, list[SynthRecord]]:
    groups = defaultdict(list)
    for r in records:
        groups[r.centre].append(r)
    return groups


def test_polypgen_names_follow_each_centres_scheme(pg_dataset):
    out, records = pg_dataset
    assert len(records) == PG_FRAMES * len(CENTRES)
    for k, group in _by_centre(records).items():
        infixes = {}
        for i, r in enumerate(group):
            match = PG_NAMES[k].fullmatch(r.image.stem)
            assert match is not None, r.image
            n = int(match.group("n"))
            assert n == PG_FIRST_NUMBER[k] + i, r.image  # consecutive, patient by patient
            folder = out / f"data_C{k}"
            assert r.image.parent == folder / f"images_C{k}" and r.image.is_file()
            stem = r.image.stem.removesuffix("_") if k == 3 and n == 489 else r.image.stem
            assert r.mask == folder / f"masks_C{k}" / f"{stem}_mask.jpg" and r.mask.is_file()
            assert r.overlay == folder / f"overlays_C{k}" / f"{stem}_overlay.png"
            assert r.overlay.is_file()
            if k == 1:
                assert r.patient == match.group("patient")
                infixes.setdefault(r.patient, set()).add(match.group("infix"))
            elif k == 4:
                assert r.patient == match.group("patient")
            else:
                assert re.fullmatch(r"[1-9]\d*", r.patient), r.patient
            if k == 3:
                assert match.group("quirk") == ("_" if n == 489 else ""), r.image
        # Patient ids: C1 101, 102, ...; others 1, 2, ...; each patient's frames contiguous.
        first = 101 if k == 1 else 1
        order = list(dict.fromkeys(r.patient for r in group))
        assert order == [str(first + j) for j in range(len(order))], (k, order)
        if k == 1:
            assert len(order) >= 2
            for j, pid in enumerate(order):
                assert infixes[pid] == {"OLC1" if j % 2 == 0 else "OLCV1"}, pid
        on_disk = {p.name for p in (out / f"data_C{k}" / f"images_C{k}").glob("*.jpg")}
        assert on_disk == {r.image.name for r in group}


def test_polypgen_c3_quirk_frame(pg_dataset, tmp_path):
    out, records = pg_dataset
    masks = out / "data_C3" / "masks_C3"
    assert (out / "data_C3" / "images_C3" / "C3_EndoCV2021_00489_.jpg").is_file()
    assert not (out / "data_C3" / "images_C3" / "C3_EndoCV2021_00489.jpg").exists()
    assert (masks / "C3_EndoCV2021_00489_mask.jpg").is_file()
    assert not (masks / "C3_EndoCV2021_00489__mask.jpg").exists()
    (quirk,) = [r for r in records if r.image.name.endswith("00489_.jpg")]
    assert quirk.centre == 3 and quirk.mask.name == "C3_EndoCV2021_00489_mask.jpg"
    # Frame 489 exists for any frame count, down to a single frame.
    for count, names in ((1, ["00489_"]), (2, ["00488", "00489_"])):
        kwargs = {"per_centre": count, "size": (32, 32), "centres": (3,), "naming": "polypgen"}
        small = generate(tmp_path / str(count), **kwargs)
        assert [r.image.stem.removeprefix("C3_EndoCV2021_") for r in small] == names


def test_polypgen_masks_mix_rgb_and_single_channel_like_the_release(pg_dataset):
    from PIL import Image

    _, records = pg_dataset
    for k, group in _by_centre(records).items():
        modes = []
        for r in group:
            with Image.open(r.mask) as mask:
                modes.append(mask.mode)
                values = np.asarray(mask)
            assert np.all((values <= 32) | (values >= 223)), r.mask
        if k in (1, 2):
            expected = round(PG_FRAMES * (241 / 256 if k == 1 else 211 / 301))
            assert modes.count("RGB") == expected and modes.count("L") == PG_FRAMES - expected
        else:
            assert set(modes) == {"L"}, k
        masks = [_gray(r.mask) for r in group]
        assert any(not m.any() for m in masks) and any(m.any() for m in masks), k


def test_polypgen_second_size_for_a_minority_of_patients(pg_dataset):
    _, records = pg_dataset
    centres_with_two_sizes = 0
    for k, group in _by_centre(records).items():
        sizes_by_patient = defaultdict(set)
        for r in group:
            image = cv2.imread(str(r.image), cv2.IMREAD_UNCHANGED)
            size = (image.shape[1], image.shape[0])
            assert _gray(r.mask).shape == _gray(r.overlay).shape == image.shape[:2], r.image
            sizes_by_patient[r.patient].add(size)
        assert all(len(s) == 1 for s in sizes_by_patient.values()), k
        per_patient = [next(iter(s)) for s in sizes_by_patient.values()]
        assert set(per_patient) <= {SIZE, SECOND_SIZE}
        n_second = per_patient.count(SECOND_SIZE)
        if len(per_patient) >= 4:
            assert 1 <= n_second <= len(per_patient) // 2, (k, per_patient)
            centres_with_two_sizes += 1
        else:
            assert n_second == 0, (k, per_patient)
    assert centres_with_two_sizes >= 2


def test_polypgen_patient_lists_match_records_in_frame_order(pg_dataset, tmp_path):
    out, records = pg_dataset
    lists = json.loads((out / "polypgen-patients.json").read_text())
    assert set(lists) == {"about", "centres"} and isinstance(lists["about"], str)
    assert set(lists["centres"]) == {"C2", "C3", "C5", "C6"}
    for k in (2, 3, 5, 6):
        group = sorted((r for r in records if r.centre == k), key=_number)
        assert lists["centres"][f"C{k}"] == [r.patient for r in group], k

    generate(tmp_path, per_centre=4, size=(32, 32), centres=(4, 5, 1), naming="polypgen")
    lists = json.loads((tmp_path / "polypgen-patients.json").read_text())
    assert list(lists["centres"]) == ["C5"] and len(lists["centres"]["C5"]) == 4


def test_polypgen_extras_are_present(pg_dataset):
    out, records = pg_dataset
    for k, group in _by_centre(records).items():
        folder = out / f"data_C{k}"
        box_images = folder / ("bbox_images_C6" if k == 6 else f"bbox_image_C{k}")
        assert not (k == 6 and (folder / "bbox_image_C6").exists())
        for r in group:
            stem = r.image.name.removesuffix(".jpg")
            text = (folder / f"bbox_C{k}" / f"{stem}.txt").read_text()
            mask = _binary(r.mask)
            if mask.any():
                match = re.fullmatch(r"polyp (\d+) (\d+) (\d+) (\d+)\n", text)
                assert match is not None, text
                x1, y1, x2, y2 = map(int, match.groups())
                ys, xs = np.nonzero(mask)
                assert abs(x1 - xs.min()) <= 1 and abs(x2 - xs.max()) <= 1, (r.mask, text)
                assert abs(y1 - ys.min()) <= 1 and abs(y2 - ys.max()) <= 1, (r.mask, text)
            else:
                assert text == ""
            assert (
                cv2.imread(str(box_images / f"{stem}.jpg")).shape == cv2.imread(str(r.image)).shape
            )

    seq = out / "sequenceData" / "positive" / "seq1"
    images = sorted(p.name for p in (seq / "images_seq1").iterdir())
    assert len(images) == 2
    stems = [n.removesuffix(".jpg") for n in images]
    assert sorted(p.name for p in (seq / "masks_seq1").iterdir()) == [
        f"{s}_mask.jpg" for s in stems
    ]
    assert sorted(p.name for p in (seq / "bbox_seq1").iterdir()) == [f"{s}.txt" for s in stems]
    assert sorted(p.name for p in (seq / "bbox_image_seq1").iterdir()) == images
    negatives = list((out / "sequenceData" / "negativeOnly" / "seq1_neg").iterdir())
    assert len(negatives) == 2 and all(p.suffix == ".jpg" for p in negatives)

    originals = {r.image.name: r.image for r in records}
    flat = list((out / "imagesAll_positive").iterdir())
    assert 1 <= len(flat) <= 3 * len(CENTRES)
    for p in flat:
        assert p.read_bytes() == originals[p.name].read_bytes()
        assert _binary(next(r.mask for r in records if r.image.name == p.name)).any()

    details = out / "dataDetails_PolypGen_SingleFrames"
    assert sorted(p.name for p in details.iterdir()) == [
        f"dataDetails_C{k}.csv" for k in range(1, 6)
    ]
    for k in range(1, 6):
        lines = (details / f"dataDetails_C{k}.csv").read_text().splitlines()
        assert len(lines) == 1 + PG_FRAMES
    for name in ("readme.md", "readme.html", "license.txt", "fileStructure_all.txt"):
        assert (out / name).read_text().strip(), name
    for folder in ("", "data_C1", "data_C1/images_C1", "data_C2/masks_C2"):
        assert (out / folder / ".DS_Store").is_file(), folder
    assert json.loads((out / "synth.json").read_text())["naming"] == "polypgen"


def test_polypgen_renders_the_same_frames_as_camsweep(tmp_path):
    kwargs = {"per_centre": 12, "size": SIZE, "seed": 4, "centres": (4, 5)}
    camsweep = generate(tmp_path / "c", **kwargs, naming="camsweep")
    polypgen = generate(tmp_path / "p", **kwargs, naming="polypgen")
    assert [r.centre for r in camsweep] == [r.centre for r in polypgen]
    # Same patients: camsweep's P00n is polypgen's n in C4 and C5.
    assert [int(r.patient[1:]) for r in camsweep] == [int(r.patient) for r in polypgen]
    main = 0
    for c, p in zip(camsweep, polypgen, strict=True):
        if cv2.imread(str(p.image)).shape[:2] == (SIZE[1], SIZE[0]):
            main += 1
            for a, b in ((c.image, p.image), (c.mask, p.mask), (c.overlay, p.overlay)):
                assert a.read_bytes() == b.read_bytes(), b
    assert main >= len(camsweep) // 2


def test_polypgen_same_seed_gives_identical_bytes(tmp_path):
    kwargs = {"per_centre": 10, "size": SIZE, "centres": (1, 3, 6), "naming": "polypgen"}
    generate(tmp_path / "a", seed=5, **kwargs)
    generate(tmp_path / "b", seed=5, **kwargs)
    generate(tmp_path / "c", seed=6, **kwargs)
    files_a, files_b, files_c = (_files(tmp_path / n) for n in "abc")
    assert files_a == files_b
    assert "polypgen-patients.json" in files_a and "fileStructure_all.txt" in files_a
    shared = [n for n in files_a if n.endswith(".jpg") and "images_C" in n and n in files_c]
    assert shared and all(files_a[n] != files_c[n] for n in shared)


def test_overwrite_removes_everything_either_naming_wrote(tmp_path):
    generate(tmp_path, per_centre=4, size=(32, 32), centres=(1, 2, 6), naming="polypgen")
    with pytest.raises(FileExistsError, match="overwrite"):
        generate(tmp_path, per_centre=2, size=(32, 32), centres=(3,))
    generate(tmp_path, per_centre=2, size=(32, 32), centres=(3,), overwrite=True, naming="camsweep")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data_C3", "synth.json"]
    generate(tmp_path, per_centre=2, size=(32, 32), centres=(4,), overwrite=True, naming="polypgen")
    names = {p.name for p in tmp_path.iterdir()}
    assert "data_C3" not in names and {"data_C4", "sequenceData", ".DS_Store"} <= names


@pytest.mark.parametrize("name", ["sequenceData", "imagesAll_positive", "polypgen-patients.json"])
def test_refuses_to_touch_foreign_release_content(tmp_path, name):
    target = tmp_path / name
    if name.endswith(".json"):
        target.write_text("{}")
    else:
        (target / "keep").mkdir(parents=True)
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match=re.escape(name)):
            generate(tmp_path, per_centre=2, size=(32, 32), overwrite=overwrite, naming="polypgen")
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert target.exists()


def test_stray_ds_store_does_not_block_generation(tmp_path):
    (tmp_path / ".DS_Store").write_bytes(b"junk")
    generate(tmp_path, per_centre=2, size=(32, 32), centres=(1,))
    assert (tmp_path / "data_C1").is_dir()
