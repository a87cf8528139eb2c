"""The real PolypGen release's tree: names, quirks, extra folders, patient rules, split schemes,
and the refusal of a frame-level split nobody asked for."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from sweeps.cli import main
from tests.conftest import write_frame
from trainables.config import DataConfig
from trainables.data.check import check_dataset
from trainables.data.decode import read_mask
from trainables.data.patients import SHIPPED_LISTS
from trainables.data.polypgen import DatasetError, index_polypgen, read_manifest_csv
from trainables.data.source import index_data, patient_problems
from trainables.data.splits import leave_one_centre_out
from trainables.data.synthetic import generate

RELEASE = "PolypGen2021_MultiCenterData_v3"
QUIRK = "C3_EndoCV2021_00489_"


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, list]:
    """A PolypGen-named tree inside a parent folder, as users unpack the release."""
    parent = tmp_path_factory.mktemp("download")
    records = generate(parent / RELEASE, per_centre=12, size=(48, 40), seed=3, naming="polypgen")
    return parent, records


def _copy(release, tmp_path: Path) -> Path:
    root = tmp_path / RELEASE
    shutil.copytree(release[0] / RELEASE, root)
    return root


def test_release_tree_loads_from_its_folder_or_its_parent_with_zero_problems(release):
    parent, records = release
    for root in (parent, parent / RELEASE):
        report = check_dataset(root)
        assert report.ok, report.problems
        assert report.manifest.root == parent / RELEASE
        # bbox images, sequences, the flat copy, metadata and .DS_Store are not frames.
        assert len(report.manifest.records) == len(records) == 6 * 12
        assert report.manifest.patients_known
    got = {(r.image, r.mask, r.centre, r.patient) for r in index_polypgen(parent).records}
    assert got == {(r.image, r.mask, r.centre, r.patient) for r in records}
    text = report.format()
    assert "no problems found" in text and "warning" not in text
    assert "PolypGen: 3-digit name prefix" in text and "polypgen-patients.json" in text


def test_data_check_cli_lists_patients_per_centre(release, capsys):
    parent, records = release
    assert main(["data", "check", str(parent)]) == 0
    out = capsys.readouterr().out
    for c in range(1, 7):
        n = len({r.patient for r in records if r.centre == c})
        row = next(line for line in out.splitlines() if line.split()[:1] == [f"C{c}"])
        assert row.split()[2] == str(n), row


def test_c3_quirk_both_spellings_and_a_truly_missing_mask_beside_it(release, tmp_path):
    root = _copy(release, tmp_path)
    images, masks = root / "data_C3/images_C3", root / "data_C3/masks_C3"
    assert (images / f"{QUIRK}.jpg").exists() and (masks / f"{QUIRK}mask.jpg").exists()
    by_image = {r.image.name: r for r in index_polypgen(root).records}
    assert by_image[f"{QUIRK}.jpg"].mask == masks / f"{QUIRK}mask.jpg"
    # The older spelling of the same frame.
    (images / f"{QUIRK}.jpg").rename(images / "C3_EndoCV2021_00489].jpg")
    by_image = {r.image.name: r for r in index_polypgen(root).records}
    assert by_image["C3_EndoCV2021_00489].jpg"].mask == masks / f"{QUIRK}mask.jpg"
    # A real missing mask is still reported, naming the image.
    victim = sorted(p for p in masks.iterdir() if "00489" not in p.name)[0]
    victim.unlink()
    with pytest.raises(DatasetError) as err:
        index_polypgen(root)
    assert err.value.problems == [
        f"{images / victim.name.replace('_mask', '')}: no mask ({victim} missing)"
    ]


def test_rgb_and_single_channel_jpeg_masks_binarise_alike(release):
    parent, records = release
    modes = {}
    for r in records:
        if r.centre not in (1, 2):
            continue
        with Image.open(r.mask) as im:
            modes.setdefault(im.mode, r.mask)
            gray = np.asarray(im.convert("L"))
        assert np.array_equal(read_mask(r.mask), (gray >= 128).astype(np.uint8))
    assert set(modes) == {"RGB", "L"}  # both kinds occur, as in the release
    rgb = read_mask(modes["RGB"])
    assert set(np.unique(rgb)) <= {0, 1}


def test_several_resolutions_and_empty_masks_load(release):
    parent, records = release
    sizes = {Image.open(r.image).size for r in records}
    assert len(sizes) >= 2
    empty = [r for r in records if not np.asarray(Image.open(r.mask)).any()]
    assert empty, "the generator writes frames without polyps"
    assert check_dataset(parent).ok


def test_a_list_whose_length_differs_from_the_centre_is_refused_not_guessed(release, tmp_path):
    root = _copy(release, tmp_path)
    gone = sorted((root / "data_C2/images_C2").iterdir())[-1]
    gone.unlink()
    (root / "data_C2/masks_C2" / f"{gone.stem}_mask.jpg").unlink()
    manifest = index_polypgen(root)
    assert set(manifest.unknown_patients) == {2}
    why = manifest.unknown_patients[2]
    assert "C2 has 11 frames but polypgen-patients.json" in why and "has 12 entries" in why
    report = check_dataset(root)
    assert report.ok  # the files are fine; the patients are what is missing
    assert "warning: patients unknown for C2" in report.format()
    # A manifest written from it leaves C2's patients for the user to fill in: until then it
    # does not load, so it cannot smuggle in a frame-level split.
    manifest.to_csv(tmp_path / "m.csv")
    _, problems = read_manifest_csv(tmp_path / "m.csv")
    assert len(problems) == 11 and all("empty patient" in p for p in problems)


def _write_named(root: Path, centre: int, stems: list[str]) -> None:
    for stem in stems:
        write_frame(root, centre, stem, size=(8, 8))


def test_shipped_authors_lists_are_zipped_by_frame_number_and_c6_is_refused(tmp_path):
    lists = json.loads(SHIPPED_LISTS.read_text())["centres"]
    assert {k: len(v) for k, v in lists.items()} == {"C2": 301, "C3": 457, "C5": 208, "C6": 87}
    numbers = list(range(50000001, 50000001 + 208))
    rng = np.random.default_rng(0)
    # Unpadded numbers so that name order and number order differ: the rule sorts by number.
    _write_named(tmp_path, 5, [f"EndoCV2021_C5_{n}" for n in rng.permutation(numbers)])
    _write_named(tmp_path, 6, [f"EndoCV2021_C6_{n:07d}" for n in range(100001, 100089)])
    manifest = index_polypgen(tmp_path)
    c5 = sorted(
        (r for r in manifest.records if r.centre == 5), key=lambda r: int(r.image.stem[14:])
    )
    assert [r.patient for r in c5] == lists["C5"]
    assert len({r.patient for r in c5}) == 45
    assert "authors' list" in manifest.patients[5].rule
    assert set(manifest.unknown_patients) == {6}
    assert "C6 has 88 frames but the authors' list" in manifest.unknown_patients[6]
    assert "has 87 entries" in manifest.unknown_patients[6]


def test_c1_and_c4_patients_come_from_the_names(tmp_path):
    _write_named(tmp_path, 1, ["144OLC1_100H0022", "144OLCV1_100H0024", "326OLCV1_100H0006"])
    _write_named(tmp_path, 4, ["4_endocv2021_positive_34", "18_endocv2021_positive_1492"])
    manifest = index_polypgen(tmp_path)
    assert manifest.patients_known
    assert {r.image.stem: r.patient for r in manifest.records} == {
        "144OLC1_100H0022": "144",
        "144OLCV1_100H0024": "144",
        "326OLCV1_100H0006": "326",
        "4_endocv2021_positive_34": "4",
        "18_endocv2021_positive_1492": "18",
    }


def test_a_centre_with_a_foreign_name_is_not_half_trusted(tmp_path):
    _write_named(tmp_path, 4, ["4_endocv2021_positive_34", "frame_0001"])
    why = index_polypgen(tmp_path).unknown_patients[4]
    assert "1 of 2 names do not follow PolypGen's C4 naming (e.g. 'frame_0001')" in why


def test_patient_pattern_overrides_the_built_in_rules(tmp_path):
    _write_named(tmp_path, 2, ["EndoCV2021_001000", "EndoCV2021_001001"])
    manifest = index_polypgen(tmp_path, patient_pattern=r"_(?P<patient>\d{4})\d\d$")
    assert manifest.patients_known
    assert {r.patient for r in manifest.records} == {"0010"}


def test_data_manifest_writes_a_csv_the_loader_reads_back(release, tmp_path, capsys):
    parent, records = release
    out = tmp_path / "patients.csv"
    assert main(["data", "manifest", str(parent), "--out", str(out)]) == 0
    assert "wrote 72 rows" in capsys.readouterr().out
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {(Path(r["image"]), r["centre"], r["patient"]) for r in rows} == {
        (r.image, str(r.centre), r.patient) for r in records
    }
    again, problems = read_manifest_csv(out)
    assert not problems and again.patients_known
    # An existing file (perhaps with the user's edits) is not overwritten by accident.
    assert main(["data", "manifest", str(parent), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


# --- no silent frame-level split ----------------------------------------------------------------


def _unknown_tree(tmp_path: Path) -> Path:
    root = tmp_path / "frames"
    for c in (1, 2, 3):
        _write_named(root, c, [f"frame{c}_{i:03d}" for i in range(6)])
    return root


def test_unknown_patients_of_a_training_centre_are_refused_unless_accepted(tmp_path):
    root = _unknown_tree(tmp_path)
    cfg = DataConfig(source="polypgen", root=root)
    manifest = index_polypgen(root)
    [problem] = patient_problems(manifest, cfg, [1])
    assert "patients unknown for training centre(s) C2, C3" in problem
    for way_out in ("data.manifest", "camsweep data manifest", "data.patient_pattern"):
        assert way_out in problem
    assert "data.allow_frame_level_split: true" in problem
    with pytest.raises(DatasetError, match="patients unknown"):
        index_data(cfg, [1])
    accepted = cfg.model_copy(update={"allow_frame_level_split": True})
    assert patient_problems(manifest, accepted, [1]) == []
    # A centre that is only ever held out is only tested on: its patients do not matter.
    _write_named(tmp_path / "mixed", 1, [f"frame_{i:03d}" for i in range(4)])
    _write_named(tmp_path / "mixed", 2, [f"C2_P00{i}_0000" for i in range(4)])
    mixed = index_polypgen(tmp_path / "mixed")
    assert patient_problems(mixed, DataConfig(), [1]) == []
    assert "C1" in patient_problems(mixed, DataConfig(), [1, 2])[0]


def _spec(tmp_path: Path, root: Path, **data) -> Path:
    raw = {
        "name": "unknown-patients",
        "data": {"source": "polypgen", "root": str(root), "image_size": 32, **data},
        "model": {"variant": "tiny"},
        "space": {"arch": {"grid": ["unet"]}, "held_out_centre": {"grid": [1]}},
        "storage": {"path": str(tmp_path / "out")},
        "tracking": {"wandb": {"mode": "disabled"}},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_validate_run_and_train_refuse_unknown_patients_before_any_work(
    tmp_path, capsys, monkeypatch
):
    import ray

    import trainables.data.source as source

    def no_decoding(*args, **kwargs):
        raise AssertionError("pixels were decoded before the patients were checked")

    monkeypatch.setattr(source, "load_or_build", no_decoding)
    root = _unknown_tree(tmp_path)
    spec = _spec(tmp_path, root)
    was_running = ray.is_initialized()
    commands = {
        "validate": ["validate", str(spec)],
        "run": ["run", str(spec)],
        "train": ["train", "--set", "data.source=polypgen", "--set", f"data.root={root}",
                  "--out", str(tmp_path / "trial")],
    }  # fmt: skip
    for name, argv in commands.items():
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert "patients unknown for training centre(s) C2, C3" in err, (name, err)
        assert "Traceback" not in err
    assert ray.is_initialized() == was_running
    assert not (tmp_path / "out").exists() and not (tmp_path / "trial").exists()
    # Accepted knowingly, the same spec validates.
    assert main(["validate", str(_spec(tmp_path, root, allow_frame_level_split=True))]) == 0


# --- split schemes ------------------------------------------------------------------------------


def _frames(sizes: dict[int, list[int]]) -> tuple[np.ndarray, list[str]]:
    centres, patients = [], []
    for c, per_patient in sizes.items():
        for p, n in enumerate(per_patient):
            centres += [c] * n
            patients += [f"p{p}"] * n
    return np.array(centres), patients


def test_pooled_split_is_the_authors_patient_level_draw():
    sizes = {1: [3, 1, 4, 1, 5, 9, 2], 2: [6, 5, 3, 5], 3: [8, 9, 7, 9, 3, 2], 4: [3, 8, 4]}
    centres, patients = _frames(sizes)
    split = leave_one_centre_out(centres, patients, 4, seed=1, scheme="pooled")
    owner = {}
    for name in ("train", "val", "test_in"):
        for i in split.indices(name):
            assert owner.setdefault((centres[i], patients[i]), name) == name  # one split each
    keys = sorted(owner, key=lambda k: (k[0], int(k[1][1:])))
    n_train = sum(v == "train" for v in owner.values())
    assert n_train == int(0.8 * len(keys)) == 13  # 80 % of the 17 pooled patients
    assert sum(v == "val" for v in owner.values()) == 2  # the other 4, halved
    assert set(centres[split.test_out]) == {4} and 4 not in {k[0] for k in keys}
    sklearn = pytest.importorskip("sklearn.model_selection")
    train, rest = sklearn.train_test_split(keys, train_size=0.8, random_state=1)
    val, test_in = sklearn.train_test_split(rest, train_size=0.5, random_state=1)
    for name, want in (("train", train), ("val", val), ("test_in", test_in)):
        assert {k for k, v in owner.items() if v == name} == set(map(tuple, want)), name


def test_both_schemes_keep_patients_whole_and_differ():
    centres, patients = _frames({1: [2] * 10, 2: [3] * 10, 3: [1] * 20})
    a = leave_one_centre_out(centres, patients, 3, seed=0, scheme="per_centre")
    b = leave_one_centre_out(centres, patients, 3, seed=0, scheme="pooled")
    assert not np.array_equal(a.train, b.train)
    with pytest.raises(ValueError, match="unknown split scheme 'mixed'"):
        leave_one_centre_out(centres, patients, 3, scheme="mixed")


def test_tables_say_how_the_data_was_split():
    from sweeps.spec import SweepSpec
    from sweeps.tables import split_note

    spec = SweepSpec(name="s", data={"split": "pooled", "split_seed": 1})
    assert split_note(spec, []).startswith("Split by patient (data.split pooled: pooled patients")
    note = split_note(spec, [2, 5])
    assert "except C2, C5" in note and "data.allow_frame_level_split" in note
    assert "optimistic" in note


# --- the demo sweep on a tree in the release's naming -------------------------------------------


@pytest.mark.slow
def test_demo_smoke_sweep_on_a_polypgen_named_tree_keeps_patients_whole(
    release, tmp_path, local_ray, capsys
):
    parent, records = release
    demo = yaml.safe_load((Path(__file__).parents[1] / "sweeps" / "demo.yaml").read_text())
    demo["data"]["root"] = str(parent)  # the folder holding PolypGen2021_MultiCenterData_v3
    demo["data"]["cache_dir"] = str(tmp_path / "cache")
    demo["storage"]["path"] = str(tmp_path / "results")
    demo["tracking"] = {"wandb": {"mode": "disabled"}}
    demo["space"]["arch"] = {"grid": ["deeplabv3plus"]}  # one architecture keeps it short
    spec = tmp_path / "demo.yaml"
    spec.write_text(yaml.safe_dump(demo))
    assert main(["run", str(spec), "--smoke"]) == 0
    [table] = (tmp_path / "results").glob("demo-smoke-*/export/table.md")
    assert "Split by patient (data.split per_centre" in table.read_text()
    splits = sorted((tmp_path / "results").glob("demo-smoke-*/*/split.csv"))
    assert len(splits) == 4  # 2 held-out centres × 2 values of p
    patient_of = {r.image.name: (r.centre, r.patient) for r in records}
    for path in splits:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == len(records)
        where: dict[tuple[int, str], set[str]] = {}
        for row in rows:
            assert patient_of[row["image"]] == (int(row["centre"]), row["patient"])
            where.setdefault(patient_of[row["image"]], set()).add(row["split"])
        assert all(len(s) == 1 for s in where.values()), path  # no patient in two splits
        assert {"train", "val", "test_in", "test_out"} <= {row["split"] for row in rows}


def test_a_fold_artefact_is_keyed_by_its_split_not_only_its_seed(synth_decoded):
    from trainables.classifier import fold_key
    from trainables.config import CamChoice, ClassifierConfig

    data = synth_decoded
    keys = {
        scheme: fold_key(
            data,
            leave_one_centre_out(data.centres, data.patients, 3, seed=0, scheme=scheme),
            ClassifierConfig(),
            CamChoice(),
        )
        for scheme in ("per_centre", "pooled")
    }
    assert keys["per_centre"] != keys["pooled"]  # a cached classifier is never reused across


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["paper-table1.yaml", "authors-code.yaml"])
def test_both_recipes_run_as_smoke_sweeps(recipe, release, tmp_path, local_ray):
    """Each recipe's --smoke version runs end to end on a PolypGen-named tree (one masked
    trial of one fold, to keep it short) and its table names the recipe."""
    parent, _ = release
    raw = yaml.safe_load((Path(__file__).parents[1] / "sweeps" / recipe).read_text())
    raw["data"].update(root=str(parent), cache_dir=str(tmp_path / "cache"))
    raw["storage"] = {"path": str(tmp_path / "results")}
    raw["tracking"] = {"wandb": {"mode": "disabled"}}
    raw["space"].update(arch={"grid": ["unet"]}, held_out_centre={"grid": [3]}, p={"grid": [0.5]})
    # --smoke keeps ImageNet weights (it must need them fetched like the full sweep); this
    # machine is offline and has none, so the preflight would refuse the run.
    raw["model"]["encoder_weights"] = None
    raw["classifier"]["weights"] = None
    spec = tmp_path / recipe
    spec.write_text(yaml.safe_dump(raw))
    assert main(["run", str(spec), "--smoke"]) == 0
    [table] = (tmp_path / "results").glob("*-smoke-*/export/table.md")
    assert f"Recipe: spec {raw['name']}-smoke" in table.read_text()
