"""SweepSpec: the strict, typed model of a sweep YAML.

A spec is the trial config's sections (data, model, classifier, masking, train — the values every
trial shares) plus the search space, search algorithm, scheduler, resources, tracking and storage.
:func:`load_spec` reports *every* problem at once — unknown keys, wrong types, values out of range,
unknown architectures, held-out centres the data lacks, GPUs that are not there, an unwritable
storage path — before any Ray process starts.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from search_spaces.axes import AXES, Axis, parse_axis
from search_spaces.config import SchedulerConfig, SearchConfig
from trainables.config import (
    TRIAL_SECTIONS,
    DataConfig,
    Strict,
    TrialConfig,
    TrialSections,
    format_validation_error,
    with_axis_values,
)
from trainables.data.cache import cache_root
from trainables.data.polypgen import DatasetError
from trainables.data.source import patient_problems, scan_data
from trainables.data.synthetic import POLYPGEN_CENTRE_SIZES
from trainables.models.weights import is_weights_path

# Files camsweep keeps in every run folder, next to Tune's.
SPEC_FILE = "camsweep-spec.yaml"  # the resolved spec
FOLDS_FILE = "camsweep-folds.json"  # which folds were prepared or reused
FINISHED_DIR = "camsweep-finished"  # <trial id>/results.json of every finished trial
SLURM_DIR = "slurm"  # `camsweep slurm`: the job script and its logs
SELECTION_METRICS = ("val/dice", "val/iou", "val/recall", "val/precision", "val/accuracy")


class ResourceShare(Strict):
    """One architecture's override of the per-trial resources (unset: the sweep's default)."""

    cpu: float | None = Field(None, gt=0, description="CPUs per trial of this architecture")
    gpu: float | None = Field(None, ge=0, description="GPU share per trial of this architecture")


class ResourcesConfig(Strict):
    """Per-trial resources. Architectures differ several-fold in memory and compute, so each may
    pack differently on a GPU: ``per_arch: {deeplabv3plus: {gpu: 1}}`` next to ``gpu: 0.5``."""

    cpu: float = Field(1.0, gt=0, description="CPUs per trial (and per fold preparation)")
    gpu: float = Field(0.0, ge=0, description="fractions pack several trials on one GPU")
    per_arch: dict[str, ResourceShare] = Field(
        default_factory=dict, description="per-architecture overrides of cpu and gpu"
    )

    @field_validator("per_arch")
    @classmethod
    def _known_archs(cls, per_arch: dict[str, ResourceShare]) -> dict[str, ResourceShare]:
        from trainables.models.registry import MODEL_NAMES

        unknown = sorted(set(per_arch) - set(MODEL_NAMES))
        if unknown:
            raise ValueError(
                f"unknown architecture(s) {', '.join(unknown)}; valid: {', '.join(MODEL_NAMES)}"
            )
        return per_arch

    def of(self, arch: str) -> dict[str, float]:
        """{"cpu", "gpu"} of one trial of this architecture."""
        share = self.per_arch.get(arch, ResourceShare())
        return {
            "cpu": self.cpu if share.cpu is None else share.cpu,
            "gpu": self.gpu if share.gpu is None else share.gpu,
        }

    def most(self) -> dict[str, float]:
        """The largest cpu and gpu any trial asks for (what the cluster must offer)."""
        shares = [self.of(a) for a in self.per_arch] + [{"cpu": self.cpu, "gpu": self.gpu}]
        return {k: max(s[k] for s in shares) for k in ("cpu", "gpu")}


class WandbConfig(Strict):
    project: str = Field("camsweep", description="W&B project")
    entity: str | None = Field(None, description="W&B entity (team); default: yours")
    mode: Literal["auto", "online", "offline", "disabled"] = Field(
        "auto", description="auto: online with WANDB_API_KEY, offline otherwise"
    )
    init_timeout_s: float = Field(
        30.0, gt=0, description="online: give up (and log offline) after this long"
    )


class TrackingConfig(Strict):
    wandb: WandbConfig = Field(WandbConfig(), description="Weights & Biases runs")


class StorageConfig(Strict):
    path: str = Field("~/camsweep-results", description="local path, NFS mount or s3:// URI")


class WeightsConfig(Strict):
    """Where trials find pretrained weights (``camsweep weights fetch`` puts them there)."""

    cache: str | None = Field(
        None,
        description="folder of fetched pretrained weights (torch/ and huggingface/ inside; on an "
        "offline cluster a path every node mounts); default: each node's TORCH_HOME and "
        "Hugging Face cache",
    )


class RayConfig(Strict):
    """Settings of the embedded local Ray (ignored with --address)."""

    num_cpus: int | None = Field(
        None,
        ge=1,
        description="CPUs Ray may use; default: those this process may run on (CPU affinity, "
        "SLURM_CPUS_PER_TASK)",
    )
    num_gpus: int | None = Field(
        None, ge=0, description="GPUs Ray may use; default: CUDA_VISIBLE_DEVICES, else all"
    )
    object_store_mb: int = Field(512, ge=64, description="Ray object store (the shared dataset)")
    dashboard: bool = Field(False, description="start Ray's dashboard (localhost only)")


class SweepSpec(TrialSections):
    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="names the run folder and W&B group"
    )
    space: dict[str, Any] = Field(
        default_factory=dict, description="axis name → constant, grid, choice or interval"
    )
    search: SearchConfig = Field(SearchConfig(), description="how trials are drawn")
    scheduler: SchedulerConfig = Field(SchedulerConfig(), description="early stopping")
    resources: ResourcesConfig = Field(ResourcesConfig(), description="per-trial CPUs and GPUs")
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="at most this many trials at once; default: what fits"
    )
    checkpoints_to_keep: int = Field(
        2,
        ge=1,
        description="checkpoints kept per trial; an older one is deleted once no stored "
        "snapshot of the run names it (so one more may stay until the next snapshot)",
    )
    tracking: TrackingConfig = Field(TrackingConfig(), description="experiment tracking")
    storage: StorageConfig = Field(StorageConfig(), description="where results go")
    weights: WeightsConfig = Field(WeightsConfig(), description="pretrained weights' cache")
    ray: RayConfig = Field(RayConfig(), description="the embedded local Ray")

    @cached_property
    def axes(self) -> list[Axis]:
        """The parsed space (parsed once; a spec that loaded has no broken axis)."""
        return [parse_axis(name, raw)[0] for name, raw in self.space.items()]

    def values_of(self, axis: str, default: Any) -> list[Any]:
        """The values a swept axis takes (a sampled interval: its bounds), else ``[default]``."""
        # During validation an axis that failed to parse is None: it has no values to give.
        found = next((a for a in self.axes if a is not None and a.name == axis), None)
        return list(found.values) if found is not None else [default]

    def held_out_centres(self) -> list[int]:
        """The folds this sweep trains (the held_out_centre axis, or the trial default)."""
        return self.values_of("held_out_centre", TrialConfig().held_out_centre)

    def base_trial(self) -> dict[str, Any]:
        """The trial config shared by every trial, before the axes are applied."""
        return {s: getattr(self, s).model_dump(mode="json") for s in TRIAL_SECTIONS}

    def trial_config(self, axis_values: dict[str, Any]) -> TrialConfig:
        """The full trial config for one point of the space (axis name → value)."""
        return with_axis_values(self.base_trial(), AXES, axis_values)

    def any_trial_masks(self) -> bool:
        """Whether some trial masks, i.e. some value of the p axis does (for a sampled interval
        its bounds are its values: high > low >= 0, so high masks) — then folds need the centre
        classifier."""
        p_values = self.values_of("p", self.masking.p)
        return any(self.trial_config({"p": p}).masking.masks for p in p_values)

    def weights_cache(self) -> str | None:
        """``weights.cache`` as an absolute path (resolved where the sweep is started, so every
        node is given the same folder), or None for each node's own default caches."""
        cache = self.weights.cache
        return str(Path(cache).expanduser().resolve()) if cache else None

    def storage_root(self) -> str:
        path = self.storage.path
        return path if "://" in path else str(Path(path).expanduser().resolve())

    def fold_cache_root(self) -> Path:
        """Where fold artefacts are cached: shared by every sweep using the same storage."""
        root = self.storage_root()
        if "://" in root:  # remote storage: keep the fold cache on the node's disk
            return cache_root() / "folds"
        return Path(root) / "folds"


class SpecError(ValueError):
    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        body = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s):\n{body}")


def data_problems(data: DataConfig, held_out: list[int]) -> tuple[list[int], list[str]]:
    """Centres the configured dataset has (by indexing names only, no pixels) and its problems,
    including training centres of these folds whose patients are unknown."""
    if data.source == "synthetic":  # generated on first use, patients known by construction
        return sorted(POLYPGEN_CENTRE_SIZES), []
    try:
        manifest, problems = scan_data(data)
    except DatasetError as exc:  # no root to scan (data_root says which key is missing)
        return [], exc.problems
    problems = [f"data: {p}" for p in problems]
    if manifest.records:
        problems += patient_problems(manifest, data, held_out)
    return manifest.centres, problems


def _axis_problems(spec: SweepSpec) -> list[str]:
    problems: list[str] = []
    axes: list[Axis] = []
    for name, raw in spec.space.items():
        axis, errs = parse_axis(name, raw)
        problems += errs
        if axis is not None:
            axes.append(axis)
    for axis in axes:
        for value in axis.values:
            try:
                spec.trial_config({axis.name: value})
            except ValidationError as exc:
                for err in exc.errors():
                    problems.append(f"space.{axis.name}: {value!r}: {err['msg']}")
    if spec.search.algorithm == "optuna" and not any(a.is_sampled for a in axes):
        problems.append(
            "search.algorithm optuna: the space has no sampled axis (choice/uniform/loguniform)"
        )
    if spec.search.metric not in SELECTION_METRICS:
        problems.append(
            f"search.metric {spec.search.metric!r}: valid: {', '.join(SELECTION_METRICS)}"
        )
    # Fold preparation runs with resources.gpu, each trial with its architecture's share.
    shares = {"resources.gpu": spec.resources.gpu} | {
        f"resources.per_arch.{a}.gpu": spec.resources.of(a)["gpu"] for a in spec.resources.per_arch
    }
    no_gpu = [name for name, gpu in shares.items() if gpu == 0]
    if spec.train.device == "cuda" and no_gpu:
        problems.append(
            f"train.device cuda: {', '.join(no_gpu)} is 0 — Ray would reserve no GPU for that "
            "work; give it a GPU share, or use train.device auto (CPU where no GPU is granted)"
        )
    return problems


def _storage_problems(spec: SweepSpec) -> list[str]:
    if "://" in spec.storage.path:
        return []  # remote filesystems are checked by Ray when the Tuner starts
    path = Path(spec.storage_root())
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return [f"storage.path {spec.storage.path!r}: {probe} is a file, not a folder"]
    if not os.access(probe, os.W_OK):
        return [f"storage.path {spec.storage.path!r}: {probe} is not writable"]
    return []


def spec_problems(
    spec: SweepSpec, *, local_gpus: int | None = None, environment: bool = True
) -> list[str]:
    """Problems beyond the schema: axes, and — with ``environment`` — the data's centres, the
    storage path and GPUs (``local_gpus`` None skips the GPU check, e.g. for a cluster)."""
    problems = _axis_problems(spec)
    if not environment:
        return problems
    wanted = spec.held_out_centres()
    centres, found = data_problems(spec.data, wanted)
    problems += found
    if centres:
        for c in wanted:
            if c not in centres:
                problems.append(
                    f"space.held_out_centre: centre {c} is not in the data (centres: {centres})"
                )
    problems += _storage_problems(spec)
    gpu = spec.resources.most()["gpu"]
    if local_gpus is not None and gpu > 0 and local_gpus == 0:
        problems.append(
            f"resources.gpu {gpu:g}: no GPU on this machine — set resources.gpu: 0 (and no "
            "per_arch GPUs), or run on a cluster with GPUs (--address)"
        )
    return problems


def read_spec_yaml(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise SpecError(str(path), ["file does not exist"])
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(str(path), [f"not valid YAML ({exc})"]) from None
    if not isinstance(raw, dict):
        raise SpecError(str(path), ["expected a mapping at the top level"])
    return raw


def load_spec(
    path: Path | str,
    *,
    local_gpus: int | None = None,
    raw: dict[str, Any] | None = None,
    environment: bool = True,
) -> SweepSpec:
    """Reads and fully validates a sweep spec; raises :class:`SpecError` listing every problem.

    ``environment=False`` checks only what is in the file (schema and space), not the data,
    storage or GPUs of this machine — for specs meant for another machine or cluster.
    """
    raw = read_spec_yaml(path) if raw is None else raw
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        schema = format_validation_error(exc, str(path)).splitlines()[1:]
        problems = [line.strip().removeprefix("- ") for line in schema]
        # The axis checks still run on a copy without the broken sections, so the user sees
        # space problems in the same report.
        broken = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
        partial = {k: v for k, v in raw.items() if k not in broken or k == "name"}
        partial.setdefault("name", "unnamed")
        try:
            problems += _axis_problems(SweepSpec.model_validate(partial))
        except ValidationError:
            pass
        raise SpecError(str(path), problems) from None
    problems = spec_problems(spec, local_gpus=local_gpus, environment=environment)
    if problems:
        raise SpecError(str(path), problems)
    return spec


def smoke(raw: dict[str, Any]) -> dict[str, Any]:
    """Shrinks any spec to a few tiny trials (Ray's ``--smoke-test`` idea): 64 px, tiny models
    (with the spec's named pretrained weights), one epoch, at most two values per grid axis, one
    sample per group, CPU only. (64 px, not 32: at 32 px ResNet's last feature map is 1×1, every
    CAM is constant and masking does nothing.)"""
    raw = yaml.safe_load(yaml.safe_dump(raw))  # deep copy of plain data
    raw["name"] = f"{raw.get('name', 'sweep')}-smoke"
    data = raw.setdefault("data", {})
    data["image_size"] = 64
    if data.get("source", "synthetic") == "synthetic":
        data["synthetic"] = {**data.get("synthetic", {}), "per_centre": 16, "size": "96x96"}
        data["synthetic"].pop("scale", None)
    raw["model"] = {**raw.get("model", {}), "variant": "tiny", "encoder_name": None}
    raw["classifier"] = {**raw.get("classifier", {}), "arch": "resnet18", "epochs": 1}
    # Named weight sets (imagenet) stay, now of the tiny models, so a smoke run needs them
    # fetched and preflighted like the full sweep. A local file was made for the spec's own
    # encoder or classifier and cannot load into the tiny ones: dropped.
    for section, key in (("model", "encoder_weights"), ("classifier", "weights")):
        weights = raw[section].get(key)
        if weights is not None and is_weights_path(weights):
            raw[section][key] = None
    raw["train"] = {**raw.get("train", {}), "epochs": 1, "batch_size": 4, "device": "cpu"}
    for axis in raw.get("space", {}).values():
        if isinstance(axis, dict) and isinstance(axis.get("grid"), list):
            axis["grid"] = axis["grid"][:2]
    raw["search"] = {**raw.get("search", {}), "num_samples": 1}
    raw["scheduler"] = {**raw.get("scheduler", {}), "grace_period": 1}
    raw["resources"] = {"cpu": 1, "gpu": 0}
    raw["ray"] = {**raw.get("ray", {}), "object_store_mb": 256}
    return raw
