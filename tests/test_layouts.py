"""Dataset layouts: PolypGen, Kvasir-SEG, CVC-ClinicDB, TestDataset, auto, and data.sources."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from trainables.config import DataConfig, SourceConfig
from trainables.data.cache import load_or_build
from trainables.data.layouts import LAYOUT_NAMES, LAYOUTS, scan_layout
from trainables.data.polypgen import DatasetError
from trainables.data.source import data_root, fold_split, prepare_data, scan_data
from trainables.data.synthetic import generate

SIZE = (40, 32)  # width, height
KVASIR_STEMS = (
    "cju0qkwl35piu0993l0dewei2",
    "cju0roawvklrq0799vmjorwfv",
    "cju0s690hkp960855tjuaqvv",
)


def _write_pair(image: Path, mask: Path, *, polyp: bool = True) -> None:
    """A tiny RGB frame and its binary 0/255 mask, in the format their suffixes name."""
    for path in (image, mask):
        path.parent.mkdir(parents=True, exist_ok=True)
    w, h = SIZE
    Image.fromarray(np.full((h, w, 3), (190, 80, 70), np.uint8)).save(image)
    binary = np.zeros((h, w), np.uint8)
    if polyp:
        binary[h // 4 : h // 2, w // 4 : w // 2] = 255
    Image.fromarray(binary).save(mask)


def make_kvasir(parent: Path, stems=KVASIR_STEMS) -> Path:
    release = parent / "Kvasir-SEG"
    for stem in stems:
        _write_pair(release / "images" / f"{stem}.jpg", release / "masks" / f"{stem}.jpg")
    return release


def make_clinicdb(folder: Path, numbers=(1, 2, 10), suffix: str = ".tif") -> Path:
    """``folder/Original/<n>.tif`` and ``folder/Ground Truth/<n>.tif`` (the release's names)."""
    for n in numbers:
        _write_pair(folder / "Original" / f"{n}{suffix}", folder / "Ground Truth" / f"{n}{suffix}")
    return folder


def make_testdataset(parent: Path, parts=("CVC-300", "ETIS-LaribPolypDB", "Kvasir")) -> Path:
    folder = parent / "TestDataset"
    for part in parts:
        # The parts share names (1.png is in several of them), as the real folder does.
        for stem in ("1", "2"):
            _write_pair(
                folder / part / "images" / f"{stem}.png", folder / part / "masks" / f"{stem}.png"
            )
    return folder


def make_polypgen(root: Path, per_centre: int = 2) -> Path:
    generate(root, per_centre=per_centre, size=SIZE, seed=0)
    return root


# --- each layout --------------------------------------------------------------------------------


@pytest.mark.parametrize("point_at", ["release", "parent"])
def test_kvasir_is_one_named_centre_without_patients(tmp_path, point_at):
    release = make_kvasir(tmp_path)
    root = release if point_at == "release" else tmp_path
    manifest, problems = scan_layout(root, "kvasir", first_centre=7)
    assert problems == []
    assert manifest.root == release
    assert manifest.centres == [7] and len(manifest.records) == 3
    assert manifest.centre_name(7) == "Kvasir-SEG" and manifest.centre_label(7) == "C7 (Kvasir-SEG)"
    assert [r.image.stem for r in manifest.records] == list(KVASIR_STEMS)
    assert all(r.mask == release / "masks" / r.image.name for r in manifest.records)
    assert manifest.unknown_patients == {7: "Kvasir-SEG ships no patient ids"}
    # Unknown patients: every frame is its own patient.
    assert [r.patient for r in manifest.records] == list(KVASIR_STEMS)


def test_clinicdb_tiff_release_in_numeric_order(tmp_path):
    release = make_clinicdb(tmp_path / "CVC-ClinicDB")
    for root in (release, tmp_path):
        manifest, problems = scan_layout(root, "clinicdb")
        assert problems == [] and manifest.root == release
        assert [r.image.name for r in manifest.records] == ["1.tif", "2.tif", "10.tif"]
        assert all(r.mask == release / "Ground Truth" / r.image.name for r in manifest.records)
        assert manifest.centre_names == {1: "CVC-ClinicDB"}
        why = manifest.unknown_patients[1]
        assert "no patient" in why and "612 frames" in why
        assert "29 colonoscopy video sequences" in why and "train and test" in why


def test_clinicdb_png_and_tif_copies_prefer_tif_and_say_so(tmp_path):
    release = tmp_path / "CVC-ClinicDB"
    make_clinicdb(release / "TIF")
    make_clinicdb(release / "PNG", suffix=".png")
    manifest, problems = scan_layout(tmp_path, "clinicdb")
    assert problems == [] and manifest.root == release / "TIF"
    assert {r.image.suffix for r in manifest.records} == {".tif"}
    [note] = manifest.notes
    assert str(release) in note and "reading TIF/" in note and "PNG/" in note
    png_only = make_clinicdb(tmp_path / "png-only" / "PNG", suffix=".png")
    manifest, problems = scan_layout(png_only.parent, "clinicdb")
    assert problems == [] and manifest.root == png_only and not manifest.notes
    assert [r.image.name for r in manifest.records] == ["1.png", "2.png", "10.png"]


@pytest.mark.parametrize("point_at", ["release", "parent"])
def test_testdataset_parts_are_named_centres(tmp_path, point_at):
    folder = make_testdataset(tmp_path)
    root = folder if point_at == "release" else tmp_path
    manifest, problems = scan_layout(root, "testdataset", first_centre=3)
    assert problems == [] and manifest.root == folder
    # Numbered in TestDataset's order, from first_centre, over the parts present.
    assert manifest.centre_names == {3: "CVC-300", 4: "ETIS-LaribPolypDB", 5: "Kvasir"}
    assert manifest.centres == [3, 4, 5] and len(manifest.records) == 6
    assert set(manifest.unknown_patients) == {3, 4, 5}
    assert "CVC-300 (TestDataset) ships no patient ids" == manifest.unknown_patients[3]
    one, problems = scan_layout(folder / "CVC-300", "testdataset")
    assert problems == [] and one.centre_names == {1: "CVC-300"} and len(one.records) == 2


def test_testdataset_notes_folders_that_are_not_parts(tmp_path):
    folder = make_testdataset(tmp_path, parts=("CVC-ColonDB",))
    (folder / "CVC-ColonDb-typo").mkdir()
    manifest, problems = scan_layout(folder, "testdataset")
    assert problems == []
    assert manifest.notes == [
        f"{folder}: folder(s) CVC-ColonDb-typo are not TestDataset parts, not read"
    ]


def test_polypgen_keeps_its_own_centre_numbers(tmp_path):
    root = make_polypgen(tmp_path / "pg")
    manifest, problems = scan_layout(root, "polypgen", first_centre=9)
    assert problems == [] and manifest.centres == [1, 2, 3, 4, 5, 6]
    assert manifest.centre_names == {} and manifest.centre_name(3) == "C3"
    assert manifest.patients_known


def test_patient_pattern_gives_the_patients_of_a_layout_without_them(tmp_path):
    release = make_kvasir(tmp_path, stems=("p01_a", "p01_b", "p02_a"))
    manifest, problems = scan_layout(release, "kvasir", patient_pattern=r"^(?P<patient>p\d+)_")
    assert problems == [] and manifest.patients_known
    assert [r.patient for r in manifest.records] == ["p01", "p01", "p02"]
    missed, _ = scan_layout(release, "kvasir", patient_pattern=r"^(?P<patient>q\d+)_")
    assert "does not match patient_pattern" in missed.unknown_patients[1]
    _, problems = scan_layout(release, "kvasir", patient_pattern=r"(p\d+)")
    assert problems == [r"patient_pattern '(p\\d+)': needs a named group 'patient'"]


# --- auto ---------------------------------------------------------------------------------------

BUILDERS = {
    "polypgen": lambda tmp: make_polypgen(tmp / "PolypGen2021_MultiCenterData_v3").parent,
    "kvasir": lambda tmp: make_kvasir(tmp).parent,
    "clinicdb": lambda tmp: make_clinicdb(tmp / "CVC-ClinicDB" / "TIF").parent.parent,
    "testdataset": lambda tmp: make_testdataset(tmp).parent,
}


@pytest.mark.parametrize("layout", sorted(BUILDERS))
def test_auto_detects_each_layout(tmp_path, layout):
    root = BUILDERS[layout](tmp_path)
    manifest, problems = scan_layout(root)
    want, want_problems = scan_layout(root, layout)
    assert problems == want_problems == []
    assert manifest.records == want.records and manifest.centre_names == want.centre_names
    assert manifest.notes[0].startswith(f"{root.absolute()}: layout {layout} detected")


def test_the_registry_is_the_config_s_choices():
    assert LAYOUT_NAMES == (*LAYOUTS, "auto")
    assert set(LAYOUTS) == {"polypgen", "kvasir", "clinicdb", "testdataset"}
    assert get_args(DataConfig.model_fields["layout"].annotation) == LAYOUT_NAMES
    assert get_args(SourceConfig.model_fields["layout"].annotation) == LAYOUT_NAMES


# --- bad trees ----------------------------------------------------------------------------------


def test_missing_masks_folder_is_named(tmp_path):
    release = make_kvasir(tmp_path)
    for mask in (release / "masks").iterdir():
        mask.unlink()
    (release / "masks").rmdir()
    for layout in ("kvasir", "auto"):
        manifest, problems = scan_layout(tmp_path, layout)
        assert problems == [f"{release / 'masks'}: missing folder"] and manifest.records == []


def test_image_without_mask_and_duplicate_stems_are_all_reported(tmp_path):
    release = make_clinicdb(tmp_path / "CVC-ClinicDB", numbers=(1, 2, 3))
    (release / "Ground Truth" / "2.tif").unlink()
    _write_pair(release / "Original" / "3.png", release / "Ground Truth" / "3.png")
    manifest, problems = scan_layout(release, "clinicdb")
    gt = release / "Ground Truth"
    assert problems == [
        f"{release / 'Original'}: duplicate name '3' (3.png, 3.tif)",
        f"{gt}: duplicate name '3' (3.png, 3.tif)",
        f"{release / 'Original' / '2.tif'}: no mask ({gt / '2'}.* missing)",
    ]
    assert [r.image.name for r in manifest.records] == ["1.tif"]


def test_empty_images_folder_and_missing_part_folders(tmp_path):
    folder = make_testdataset(tmp_path, parts=("CVC-300", "Kvasir"))
    for image in (folder / "CVC-300" / "images").iterdir():
        image.unlink()
    (folder / "CVC-ColonDB").mkdir()  # a part with neither images/ nor masks/
    manifest, problems = scan_layout(folder, "testdataset")
    assert problems == [
        f"{folder / 'CVC-300' / 'images'}: no images",
        f"{folder / 'CVC-ColonDB' / 'images'}: missing folder",
        f"{folder / 'CVC-ColonDB' / 'masks'}: missing folder",
    ]
    # The empty parts keep their numbers: the centres do not move when they are fixed.
    assert manifest.centres == [3] and manifest.centre_names[3] == "Kvasir"


def test_explicit_layout_on_the_wrong_tree_names_what_is_missing(tmp_path):
    make_kvasir(tmp_path)
    _, problems = scan_layout(tmp_path, "clinicdb")
    assert problems == [
        f"{tmp_path}/Original: missing folder",
        f"{tmp_path}/Ground Truth: missing folder",
    ]
    _, problems = scan_layout(tmp_path, "testdataset")
    parts = "CVC-300, CVC-ClinicDB, CVC-ColonDB, ETIS-LaribPolypDB, Kvasir"
    assert problems == [f"{tmp_path}: none of TestDataset's folders ({parts})"]
    _, problems = scan_layout(tmp_path / "nowhere", "kvasir")
    assert problems == [f"{tmp_path / 'nowhere'}: data root does not exist"]


def test_unrecognised_and_ambiguous_trees(tmp_path):
    (tmp_path / "plain" / "photos").mkdir(parents=True)
    _, problems = scan_layout(tmp_path / "plain")
    [problem] = problems
    assert problem.startswith(f"{tmp_path / 'plain'}: no known dataset layout found; tried ")
    for name in LAYOUTS:
        assert name in problem
    make_kvasir(tmp_path / "many")
    make_testdataset(tmp_path / "many")
    _, problems = scan_layout(tmp_path / "many")
    [problem] = problems
    assert problem.startswith(f"{tmp_path / 'many'}: ambiguous tree")
    assert "kvasir (" in problem and "testdataset (" in problem


def test_unknown_layout_name_and_bad_first_centre_raise(tmp_path):
    with pytest.raises(
        ValueError,
        match="unknown layout 'kvasirseg'; valid: polypgen, kvasir, clinicdb, testdataset, auto",
    ):
        scan_layout(tmp_path, "kvasirseg")
    with pytest.raises(ValueError, match="first_centre must be an integer >= 1, got 0"):
        scan_layout(tmp_path, "kvasir", first_centre=0)


# --- config: one root of any layout, or several sources ------------------------------------------


def test_data_config_reads_one_root_of_any_layout(tmp_path):
    release = make_kvasir(tmp_path)
    for layout in ("kvasir", "auto"):
        cfg = DataConfig(source="polypgen", root=tmp_path, layout=layout)
        manifest, problems = scan_data(cfg)
        assert problems == [] and manifest.centre_names == {1: "Kvasir-SEG"}
        assert data_root(cfg) == tmp_path
    # A CSV manifest overrides the layout, as before.
    csv_path = tmp_path / "patients.csv"
    rows = [
        f"{release}/images/{s}.jpg,{release}/masks/{s}.jpg,1,P{i}"
        for i, s in enumerate(KVASIR_STEMS)
    ]
    csv_path.write_text("image,mask,centre,patient\n" + "\n".join(rows) + "\n")
    cfg = DataConfig(source="polypgen", root=tmp_path, layout="kvasir", manifest=csv_path)
    manifest, problems = scan_data(cfg)
    assert problems == [] and manifest.patients_known and manifest.centre_names == {}


def test_data_config_refuses_conflicting_keys():
    def error(**data) -> str:
        with pytest.raises(ValidationError) as exc:
            DataConfig(**data)
        return str(exc.value)

    sources = [{"root": "/data/Kvasir-SEG"}]
    text = error(source="polypgen", root="/data/pg", sources=sources)
    assert "data.sources and data.root: give one" in text
    assert "data.manifest" in error(source="polypgen", manifest="/m.csv", sources=sources)
    assert "data.layout 'kvasir'" in error(source="polypgen", layout="kvasir", sources=sources)
    assert "data.sources: empty" in error(source="polypgen", sources=[])
    assert "needs data.source 'polypgen'" in error(sources=sources)
    assert "data.layout 'kvasir': real data needs data.source 'polypgen'" in error(layout="kvasir")
    assert "centre" in error(source="polypgen", sources=[{"root": "/x", "centre": 0}])
    assert "extra" in error(source="polypgen", sources=[{"root": "/x", "folder": "y"}])
    # Every key a user can write is documented (test_spec's walk does not enter lists).
    assert all(f.description for f in SourceConfig.model_fields.values())
    ok = DataConfig(source="polypgen", sources=sources)
    assert DataConfig.model_validate(ok.model_dump(mode="json")) == ok  # a dumped config reloads


def _sources_cfg(tmp_path: Path, *, per_centre: int = 3, **data) -> DataConfig:
    polypgen = make_polypgen(tmp_path / "pg", per_centre=per_centre)
    make_kvasir(tmp_path / "kv")
    return DataConfig(
        source="polypgen",
        sources=[{"root": polypgen}, {"root": tmp_path / "kv"}],
        image_size=32,
        cache_dir=tmp_path / "cache",
        **data,
    )


def test_sources_join_polypgen_and_kvasir_under_new_centre_numbers(tmp_path):
    cfg = _sources_cfg(tmp_path)
    manifest, problems = scan_data(cfg)
    assert problems == []
    assert manifest.centres == [1, 2, 3, 4, 5, 6, 7]
    assert manifest.centre_names == {7: "Kvasir-SEG"}
    assert [manifest.centre_name(c) for c in (1, 7)] == ["C1", "Kvasir-SEG"]
    assert set(manifest.unknown_patients) == {7}
    assert data_root(cfg) == tmp_path / "pg"  # one folder standing for the data
    assert any("data.sources[1]" in n and "layout kvasir detected" in n for n in manifest.notes)

    # Kvasir-SEG as a training centre: refused, naming it, before any pixel is decoded.
    with pytest.raises(DatasetError) as exc:
        prepare_data(cfg, held_out=[1])
    text = str(exc.value)
    assert (
        "training centre(s) C7 (Kvasir-SEG)" in text and "Kvasir-SEG ships no patient ids" in text
    )

    # Held out only: it is only tested on, so its patients do not matter.
    manifest, data = prepare_data(cfg, held_out=[7])
    split = fold_split(data, cfg, 7)
    assert sorted(split.test_out) == list(range(18, 21))
    assert set(data.centres[split.test_out]) == {7}
    assert set(data.centres[split.train]) == {1, 2, 3, 4, 5, 6}
    assert data.images.shape == (21, 32, 32, 3) and set(np.unique(data.masks)) <= {0, 1}

    # Accepted knowingly: Kvasir-SEG's frames are split frame by frame.
    accepted = cfg.model_copy(update={"allow_frame_level_split": True})
    manifest, data = prepare_data(accepted, held_out=[1])
    split = fold_split(data, accepted, 1)
    kvasir = set(np.flatnonzero(data.centres == 7))
    inside = set(split.train) | set(split.val) | set(split.test_in)
    assert kvasir <= inside and not kvasir & set(split.test_out)


def test_spec_validation_and_preflight_see_the_sources(tmp_path):
    from sweeps.preflight import data_problems as node_problems
    from sweeps.spec import data_problems

    cfg = _sources_cfg(tmp_path, per_centre=1)
    centres, problems = data_problems(cfg, [1])
    assert centres == [1, 2, 3, 4, 5, 6, 7]
    [problem] = problems
    assert "C7 (Kvasir-SEG)" in problem
    assert data_problems(cfg, [7]) == (centres, [])
    assert node_problems(cfg, (1, 7)) == []
    # A node without the second source's folder: the preflight names that source.
    shutil.rmtree(cfg.sources[1].root)
    [problem] = node_problems(cfg, (1,))
    assert problem.startswith(f"data.sources[1].root {cfg.sources[1].root}: not found on this node")


def test_source_numbers_and_names(tmp_path):
    kv = make_kvasir(tmp_path / "kv")
    clinic = make_clinicdb(tmp_path / "CVC-ClinicDB")
    tests = make_testdataset(tmp_path / "td", parts=("CVC-300", "Kvasir"))
    cfg = DataConfig(
        source="polypgen",
        sources=[
            {"root": kv, "centre": 10, "name": "Kvasir-SEG (ours)"},
            {"root": clinic, "layout": "clinicdb"},
            {"root": tests},
        ],
    )
    manifest, problems = scan_data(cfg)
    assert problems == []
    assert manifest.centre_names == {
        10: "Kvasir-SEG (ours)",
        11: "CVC-ClinicDB",
        12: "CVC-300",
        13: "Kvasir",
    }
    assert manifest.centres == [10, 11, 12, 13]


def test_overlapping_or_misused_centre_numbers_are_problems(tmp_path):
    polypgen = make_polypgen(tmp_path / "pg", per_centre=1)
    kv = make_kvasir(tmp_path / "kv")
    tests = make_testdataset(tmp_path / "td", parts=("CVC-300", "Kvasir"))
    cfg = DataConfig(
        source="polypgen",
        sources=[
            {"root": polypgen},
            {"root": kv, "centre": 3},
            {"root": tests, "name": "tests"},
            {"root": polypgen, "centre": 20},
        ],
    )
    manifest, problems = scan_data(cfg)
    kv_label = f"data.sources[1] ({kv}, layout auto)"
    pg_label = f"data.sources[0] ({polypgen}, layout auto)"
    assert f"{kv_label}: centre number(s) C3 already taken by {pg_label}" in problems[0]
    assert "set data.sources[1].centre to a free number (e.g. 7)" in problems[0]
    assert "name 'tests' given, but the source has 2 centres" in problems[1]
    assert "data.sources[3]" in problems[2] and "numbers its own centres" in problems[2]
    assert manifest.centres == [1, 2, 3, 4, 5, 6]  # the clashing sources are left out


def test_cache_decodes_tiff_png_and_jpeg_from_several_roots(tmp_path):
    kv = make_kvasir(tmp_path / "kv")
    clinic = make_clinicdb(tmp_path / "CVC-ClinicDB")
    tests = make_testdataset(tmp_path / "td", parts=("CVC-300",))
    cfg = DataConfig(
        source="polypgen", sources=[{"root": kv}, {"root": clinic}, {"root": tests}], image_size=32
    )
    manifest, problems = scan_data(cfg)
    assert problems == [] and len(manifest.records) == 8
    data, hit = load_or_build(manifest, 32, tmp_path / "cache")
    assert not hit and data.images.shape == (8, 32, 32, 3)
    # Every mask (JPEG, 0/255 TIFF, PNG) decodes to {0, 1} with its square of polyp.
    assert all(set(np.unique(m)) == {0, 1} for m in data.masks)
    assert list(data.centres) == [1, 1, 1, 2, 2, 2, 3, 3]
    again, hit = load_or_build(scan_data(cfg)[0], 32, tmp_path / "cache")
    assert hit and again.key == data.key and again.dataset_hash == data.dataset_hash
