"""Sweep specs: shipped sweeps validate, malformed ones are rejected with every problem named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sweeps.cli import main
from sweeps.spec import SpecError, load_spec, smoke

ROOT = Path(__file__).parents[1]
SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))


def test_shipped_sweeps_exist():
    assert {p.name for p in SWEEPS} >= {"demo.yaml", "paper-table1.yaml", "tpe.yaml"}


@pytest.fixture(scope="module")
def polypgen_tree(tmp_path_factory) -> Path:
    """A small tree in the real release's naming, standing in for a spec's data.root."""
    from trainables.data.synthetic import generate

    root = tmp_path_factory.mktemp("PolypGen2021_MultiCenterData_v3")
    generate(root, scale=0.05, size=(64, 48), seed=0, naming="polypgen")
    return root


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_every_shipped_sweep_validates(path, polypgen_tree, tmp_path):
    spec = load_spec(path, environment=False)
    assert spec.name == path.stem
    # and its smoke version validates on this machine (CPU only), on PolypGen-named data
    raw = smoke(yaml.safe_load(path.read_text()))
    if raw["data"].get("source") == "polypgen":
        raw["data"]["root"] = str(polypgen_tree)
    raw["storage"]["path"] = str(tmp_path)
    load_spec(path, raw=raw, local_gpus=0)


def test_demo_spec_validates_fully_on_a_cpu_machine(polypgen_tree, tmp_path):
    raw = yaml.safe_load((ROOT / "sweeps" / "demo.yaml").read_text())
    assert (raw["data"]["source"], raw["data"]["root"]) == ("polypgen", "demo-data")
    raw["data"]["root"] = str(polypgen_tree)
    raw["storage"]["path"] = str(tmp_path)
    spec = load_spec("demo.yaml", raw=raw, local_gpus=0)
    assert {a.name for a in spec.axes} == {"arch", "held_out_centre", "p"}


def test_make_demo_writes_the_tree_the_demo_spec_reads():
    makefile = (ROOT / "Makefile").read_text()
    demo = yaml.safe_load((ROOT / "sweeps" / "demo.yaml").read_text())
    root = demo["data"]["root"]
    synth, check, run = (line.strip() for line in makefile.split("\ndemo:")[1].splitlines()[1:4])
    assert f"synth --out {root} " in synth and check.endswith(f"data check {root}")
    assert run.endswith("run sweeps/demo.yaml")


def test_paper_grid_matches_table1():
    spec = load_spec(ROOT / "sweeps" / "paper-table1.yaml", environment=False)
    axes = {a.name: a for a in spec.axes}
    assert axes["arch"].values == ("unet", "deeplabv3plus", "sdnet")
    assert axes["held_out_centre"].values == (1, 2, 3, 4, 5, 6)
    assert axes["p"].values == (0.0, 0.4, 0.5, 0.6)
    assert (spec.train.epochs, spec.train.batch_size, spec.train.lr) == (300, 4, 1e-5)
    assert (spec.data.image_size, spec.classifier.epochs, spec.classifier.arch) == (
        256,
        10,
        "resnet50",
    )
    assert spec.resources.gpu > 0


def _spec(tmp_path, **changes):
    raw = {
        "name": "t",
        "space": {"arch": {"grid": ["unet"]}, "held_out_centre": {"grid": [1]}},
        "storage": {"path": str(tmp_path / "out")},
    }
    raw.update(changes)
    return raw


def _problems(tmp_path, **changes) -> str:
    with pytest.raises(SpecError) as err:
        load_spec("t.yaml", raw=_spec(tmp_path, **changes), local_gpus=0)
    return str(err.value)


def test_malformed_specs_report_every_problem_at_once(tmp_path):
    text = _problems(
        tmp_path,
        colour="red",
        train={"epochs": "many"},
        space={
            "arch": {"grid": ["unet", "resnet"]},
            "held_out_centre": {"grid": [1, 9]},
            "p": {"grid": [0.0, 1.5]},
            "threshold": 0.0,
            "lr": {"grid": []},
            "depth": 3,
        },
    )
    for expected in (
        "colour: Extra inputs are not permitted",
        "train.epochs:",
        "space.arch: 'resnet': Value error, unknown architecture 'resnet'",
        "space.p: 1.5:",
        "space.threshold: 0.0:",
        "space.lr.grid: must be a non-empty list",
        "space.depth: unknown axis",
    ):
        assert expected in text, expected


def test_environment_problems(tmp_path):
    text = _problems(
        tmp_path,
        space={"held_out_centre": {"grid": [2, 7]}},
        resources={"gpu": 0.25},
        data={"source": "polypgen", "root": str(tmp_path / "nowhere")},
    )
    assert "resources.gpu 0.25: no GPU on this machine" in text
    assert "data root does not exist" in text
    text = _problems(tmp_path, space={"held_out_centre": {"grid": [2, 7]}})
    assert (
        "space.held_out_centre: centre 7 is not in the data (centres: [1, 2, 3, 4, 5, 6])" in text
    )
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    text = _problems(tmp_path, storage={"path": str(blocker / "results")})
    assert f"{blocker} is a file, not a folder" in text


def test_optuna_needs_a_sampled_axis_and_forms_are_checked(tmp_path):
    text = _problems(tmp_path, search={"algorithm": "optuna"})
    assert "the space has no sampled axis" in text
    text = _problems(
        tmp_path, space={"p": {"uniform": [0.8, 0.2]}, "lr": {"loguniform": [0, 1]}, "seed": [1, 2]}
    )
    assert "space.p.uniform: low 0.8 must be below high 0.2" in text
    assert "space.lr.loguniform: bounds must be positive" in text
    assert "space.seed: a list needs a form" in text


def test_validate_cli(tmp_path, capsys):
    assert main(["validate", "--file-only", *map(str, SWEEPS)]) == 0
    out = capsys.readouterr().out
    assert "paper-table1.yaml: ok — 72 group(s) × 1 sample(s) = 72 trial(s)" in out
    assert "tpe.yaml: ok — 18 group(s) × 20 sample(s) = 360 trial(s), optuna search, asha" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nspace: {p: {grid: [2]}}\n")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "space.p: 2:" in err and "Traceback" not in err


def test_cluster_yaml_passes_rays_own_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    workers = config["available_node_types"]["gpu_worker"]
    assert workers["min_workers"] == 0 and config["available_node_types"]["head"]["resources"] == {
        "CPU": 0
    }
    text = (ROOT / "cluster.yaml").read_text().lower()
    for secret in ("aws_access_key", "aws_secret", "token", "password", "wandb_api_key"):
        assert secret not in text


def test_every_config_field_is_documented():
    """Every key a user can write has a description (the CLI help and README draw on them)."""
    from pydantic import BaseModel

    from sweeps.spec import SweepSpec
    from trainables.config import TrialConfig

    missing, seen = [], set()

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, field in model.model_fields.items():
            if not field.description:
                missing.append(f"{model.__name__}.{name}")
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                walk(field.annotation)

    walk(SweepSpec)
    walk(TrialConfig)
    assert len(seen) > 10 and not missing, missing


def test_each_shipped_recipe_says_where_it_departs_from_the_paper():
    from sweeps.recipes import paper_departures

    def departures(name: str) -> list[str]:
        return paper_departures(load_spec(ROOT / "sweeps" / name, environment=False))

    assert departures("paper-table1.yaml") == []
    assert departures("authors-code.yaml") == [
        "data.image_size 512 (paper: 256)",
        "model.variant authors (paper: paper)",
        "masking.draw per_batch (paper: per_sample)",
        "masking.attribution cam (paper: gradcam)",
        "masking.cam_input rgb (paper: sobel)",
    ]
    assert "data.image_size 64 (paper: 256)" in departures("demo.yaml")


def test_a_sweep_s_encoder_weights_go_only_to_architectures_with_an_encoder():
    # paper-table1 gives its shared model section ImageNet encoders and sweeps SDNet too, which
    # is trained from scratch: its trials record no encoder weights instead of failing to build.
    spec = load_spec(ROOT / "sweeps" / "paper-table1.yaml", environment=False)
    assert spec.model.encoder_weights == "imagenet"
    trials = {arch: spec.trial_config({"arch": arch}).model for arch in ("unet", "sdnet")}
    assert trials["unet"].encoder_weights == "imagenet"
    assert trials["sdnet"].encoder_weights is None and trials["sdnet"].encoder_name is None
    from trainables.models import build_model

    build_model("sdnet", variant="tiny", encoder_weights=trials["sdnet"].encoder_weights)
