"""The trial config: one strict, typed object describing everything one trial does.

Defaults live here only. They are the paper's settings where the paper states one (image size
256, batch 4, lr 1e-5, 300 epochs, 10 classifier epochs, threshold 0.5, the augmentation
probabilities); where it is silent they are camsweep's choices, and each field's description
says so (e.g. the classifier's lr 1e-4 and batch 16, the per-centre split). Unknown keys are
errors, so a typo in a YAML file never silently falls back to a default.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from trainables.data.layouts import LAYOUT_NAMES
from trainables.models.registry import (
    CLASSIFIER_ARCHS,
    MODEL_NAMES,
    VARIANTS,
    has_pretrained_encoder,
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AugmentConfig(Strict):
    """Training-only augmentations (the paper's: rotation and flips with p 0.5, colour jitter
    with p 0.3), applied alike to image, mask and CAM except the jitter (image only)."""

    rotate_p: float = Field(0.5, ge=0, le=1, description="probability of a random rotation")
    rotate_limit: float = Field(90.0, ge=0, le=180, description="max rotation, degrees")
    hflip_p: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    vflip_p: float = Field(0.5, ge=0, le=1, description="probability of a vertical flip")
    color_jitter_p: float = Field(0.3, ge=0, le=1, description="probability of colour jitter")
    # The three keys below are settings the paper does not state; the defaults keep camsweep's
    # pipeline (albumentations 2.0 defaults), sweeps/authors-code.yaml sets the released code's.
    normalise: Literal["last", "first"] = Field(
        "last",
        description="when the ImageNet normalisation happens. last: the transforms act on the "
        "uint8 image, normalised afterwards (camsweep); first: normalise, then rotate, flip and "
        "jitter the float image, as the released code's A.Compose does — the jitter then clips "
        "each brightness/contrast/saturation step to [0, 1] of the normalised image, as "
        "albumentations does for floats. The paper does not state the order",
    )
    rotate_border: Literal["constant", "reflect"] = Field(
        "constant",
        description="what a rotation fills its corners with, in image, mask and CAM alike. "
        "constant: 0 (black; with normalise first, 0 of the normalised image, the ImageNet mean "
        "colour), camsweep's choice; reflect: OpenCV's BORDER_REFLECT_101, the released code's "
        "A.Rotate() default (albumentations 1.3). The paper does not state it",
    )
    hue: float = Field(
        0.5,
        ge=0,
        le=0.5,
        description="colour jitter's largest hue shift, a fraction of a turn drawn from "
        "[-hue, hue]: 0.5 is albumentations 2.0's default (camsweep), the released code sets "
        "0.2; the paper does not state it. Brightness, contrast and saturation factors are "
        "drawn from [0.8, 1.2] in both (the released code's 0.2 each)",
    )


class SyntheticConfig(Strict):
    """How to generate the dataset when ``data.source`` is ``synthetic``."""

    per_centre: int | None = Field(None, ge=1, description="frames per centre (instead of scale)")
    scale: float = Field(
        1.0, gt=0, description="fraction of PolypGen's centre sizes (1537 frames at 1)"
    )
    size: str = Field("640x480", description="frame size WIDTHxHEIGHT of the generated images")
    seed: int = Field(0, ge=0, description="generator seed: the same arguments give the same files")
    naming: Literal["polypgen", "camsweep"] = Field(
        "polypgen",
        description="polypgen: the real release's names, quirks and extra folders (the loader's "
        "real path); camsweep: C{k}_P{nnn}_{frame} names carrying the patient",
    )

    @field_validator("size")
    @classmethod
    def _size(cls, size: str) -> str:
        from trainables.data.synthetic import parse_size

        parse_size(size)  # raises ValueError naming the value
        return size


class SourceConfig(Strict):
    """One dataset tree of ``data.sources``: its centres join the others' under new numbers."""

    root: Path = Field(
        description="the dataset's release folder (PolypGen2021_MultiCenterData_v3, "
        "Kvasir-SEG, CVC-ClinicDB, TestDataset) or the folder holding it"
    )
    layout: Literal[LAYOUT_NAMES] = Field(  # trainables.data.layouts.LAYOUTS, one source
        "auto",
        description="the tree's layout: " + ", ".join(LAYOUT_NAMES) + " (auto: detected)",
    )
    centre: int | None = Field(
        None,
        ge=1,
        description="number of the source's first centre (later ones follow); default: the "
        "next number after the previous sources' centres. PolypGen keeps its C1-C6",
    )
    name: str | None = Field(
        None,
        min_length=1,
        description="the centre's name in reports instead of the dataset's (e.g. Kvasir-SEG); "
        "single-centre sources only",
    )


class DataConfig(Strict):
    source: Literal["polypgen", "synthetic"] = Field(
        "synthetic",
        description="polypgen: real data, the tree at root (or data.sources); synthetic: "
        "generated on first use",
    )
    root: Path | None = Field(
        None,
        description="dataset root of the layout data.layout (for PolypGen the "
        "PolypGen2021_MultiCenterData_v3 folder or its parent); for synthetic data, where it "
        "is generated",
    )
    layout: Literal[LAYOUT_NAMES] = Field(  # trainables.data.layouts.LAYOUTS, one source
        "polypgen",
        description="the layout of the tree at data.root: polypgen; kvasir (Kvasir-SEG); "
        "clinicdb (CVC-ClinicDB, TIFF or PNG); testdataset (TestDataset's five test sets, one "
        "centre each); auto (detected from the tree). Source polypgen only",
    )
    sources: list[SourceConfig] | None = Field(
        None,
        description="several dataset trees instead of data.root, their centres numbered one "
        "after another (e.g. PolypGen C1-C6, then Kvasir-SEG as C7); source polypgen only",
    )
    manifest: Path | None = Field(
        None, description="CSV (image, mask, centre, patient): overrides the layout and patients"
    )
    patient_pattern: str | None = Field(
        None,
        description="regex with a group 'patient' read from every image name; default: the "
        "built-in rules (PolypGen's names, camsweep's synthetic names)",
    )
    allow_frame_level_split: bool = Field(
        False,
        description="accept splitting frame by frame where a training centre's patients are "
        "unknown (frames of one patient can then sit in train, val and test_in)",
    )
    split: Literal["per_centre", "pooled"] = Field(
        "per_centre",
        description="per_centre: 80/10/10 of frames within each training centre, by patient; "
        "pooled: the authors' loader, 80 % of the pooled patients, the rest halved",
    )
    image_size: int = Field(256, ge=16, le=2048, description="frames are resized to this square")
    cache_dir: Path | None = Field(
        None, description="decoded cache; default $CAMSWEEP_CACHE/decoded (~/.cache/camsweep)"
    )
    split_seed: int = Field(0, description="shuffles patients into train/val/test_in")
    synthetic: SyntheticConfig = Field(SyntheticConfig(), description="the generated dataset")

    @field_validator("patient_pattern")
    @classmethod
    def _pattern(cls, pattern: str | None) -> str | None:
        if pattern is None:
            return None
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid regex {pattern!r} ({exc})") from None
        if "patient" not in compiled.groupindex:
            raise ValueError(
                f"{pattern!r} needs a named group 'patient', e.g. _(?P<patient>P\\d+)_"
            )
        return pattern

    @model_validator(mode="after")
    def _one_way_to_name_the_data(self) -> DataConfig:
        # Checked on values, not on the keys written: a dumped config (every default spelt
        # out) must validate again.
        if self.source == "synthetic" and (self.sources is not None or self.layout != "polypgen"):
            key = "data.sources" if self.sources is not None else f"data.layout {self.layout!r}"
            raise ValueError(
                f"{key}: real data needs data.source 'polypgen' (synthetic data is generated "
                "in PolypGen's layout)"
            )
        if self.sources is None:
            return self
        clashes = [
            key
            for key, clash in (
                ("data.root", self.root is not None),
                ("data.manifest", self.manifest is not None),
                (f"data.layout {self.layout!r}", self.layout != "polypgen"),
            )
            if clash
        ]
        if clashes:
            raise ValueError(
                f"data.sources and {', '.join(clashes)}: give one; with data.sources each "
                "source names its own root and layout"
            )
        if not self.sources:
            raise ValueError("data.sources: empty; list at least one source or use data.root")
        return self


class ModelConfig(Strict):
    arch: str = Field("unet", description=" | ".join(MODEL_NAMES))
    variant: Literal[VARIANTS] = Field(  # the registry's names, one source
        "paper",
        description="paper: the published models; tiny: small, for tests and CPU demos; "
        "authors: the released code's (plain UNet from scratch, DeepLabV3+ ASPP 6/12/18)",
    )
    encoder_name: str | None = Field(
        None, description="smp encoder (unet, deeplabv3plus); default: the variant's"
    )
    encoder_weights: str | None = Field(None, description="None, 'imagenet' or a local file")

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        if arch not in MODEL_NAMES:
            raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(MODEL_NAMES)}")
        return arch


class ClassifierConfig(Strict):
    """The frozen centre classifier whose GradCAM drives the masking."""

    arch: str = Field("resnet50", description=" | ".join(CLASSIFIER_ARCHS) + " (paper: resnet50)")
    weights: str | None = Field(None, description="None, 'imagenet' or a local state-dict file")
    epochs: int = Field(10, ge=1, description="training epochs (paper: 10)")
    batch_size: int = Field(16, ge=1, description="camsweep's choice; the paper is silent")
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate; camsweep's choice")
    seed: int = Field(0, description="separate from the trial seed so seeds share one classifier")
    augment: Literal["flips", "segmentation"] = Field(
        "flips",
        description="flips: flips only (camsweep; rotation corners mimic centre borders); "
        "segmentation: the trial's train.augment, as the released code trains it",
    )
    select: Literal["last", "best_val_accuracy"] = Field(
        "last",
        description="the classifier kept: the last epoch's (camsweep; the paper is silent) or "
        "the best validation accuracy's (released code)",
    )

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        if arch not in CLASSIFIER_ARCHS:
            raise ValueError(
                f"unknown classifier arch {arch!r}; valid: {', '.join(CLASSIFIER_ARCHS)}"
            )
        return arch


# How a selected sample is masked (cam.MASK_MODES holds the function of each).
MASK_MODE_NAMES = ("occlude", "keep")
# Who is drawn for masking with probability p: each sample, or each batch as a whole.
MASK_DRAWS = ("per_sample", "per_batch")
# The class activation map: GradCAM or fc-weight CAM, on the Sobel image or the raw RGB one.
CAM_ATTRIBUTIONS = ("gradcam", "cam")
CAM_INPUTS = ("sobel", "rgb")
# The ResNet stage whose activations GradCAM explains: the last (the paper's "last conv layer")
# or an earlier, finer one. The fc-weight CAM needs layer4: the fc weights belong to its channels.
CAM_LAYERS = ("layer4", "layer3", "layer2", "layer1")


@dataclass(frozen=True)
class CamChoice:
    """How a fold's CAMs are computed: the class explained, the attribution and its input."""

    target: str = "predicted"
    attribution: str = "gradcam"
    input: str = "sobel"
    layer: str = "layer4"


PAPER_CAM = CamChoice()  # GradCAM of the predicted centre on the Sobel image


class MaskingConfig(Strict):
    p: float = Field(0.0, ge=0, le=1, description="per-sample masking probability; 0 = baseline")
    threshold: float = Field(0.5, gt=0, lt=1, description="CAM binarisation threshold")
    mode: Literal[MASK_MODE_NAMES] = Field(  # cam.MASK_MODES is keyed by these
        "occlude",
        description="occlude: x * (1 - bin(cam)), the paper's intent and what the released code "
        "does (its MONAI map is flipped); keep: x * bin(cam), an ablation",
    )
    draw: Literal[MASK_DRAWS] = Field(
        "per_sample",
        description="per_sample: each sample masked with probability p (paper); per_batch: "
        "the whole batch or none (released code)",
    )
    cam_mode: Literal["cached", "online"] = Field(
        "cached",
        description="cached: CAMs of the un-augmented images, once per fold; online: "
        "recomputed on every augmented batch",
    )
    cam_target: Literal["predicted", "true"] = Field(
        "predicted", description="the class whose CAM is taken: predicted or true centre"
    )
    attribution: Literal[CAM_ATTRIBUTIONS] = Field(
        "gradcam",
        description="gradcam: GradCAM at layer4 (paper); cam: fc-weight CAM without ReLU "
        "(released code, MONAI CAM)",
    )
    cam_input: Literal[CAM_INPUTS] = Field(
        "sobel",
        description="the classifier's input when its CAMs are taken: sobel (paper; what it is "
        "trained on) or rgb (released code)",
    )
    cam_layer: Literal[CAM_LAYERS] = Field(
        "layer4",
        description="the ResNet stage GradCAM explains: layer4, the last (paper and released "
        "code), or the finer layer3/layer2/layer1 (2/4/8 times layer4's resolution); the cam "
        "attribution needs layer4",
    )

    @model_validator(mode="after")
    def _fc_cam_needs_layer4(self) -> MaskingConfig:
        if self.attribution == "cam" and self.cam_layer != "layer4":
            raise ValueError(
                f"masking.cam_layer {self.cam_layer!r} with masking.attribution 'cam': the "
                "fc-weight CAM weighs layer4's channels; use cam_layer layer4 or gradcam"
            )
        return self

    @property
    def cam(self) -> CamChoice:
        """Which maps drive the masking: they key the fold's cached CAMs."""
        return CamChoice(self.cam_target, self.attribution, self.cam_input, self.cam_layer)

    @property
    def masks(self) -> bool:
        """Whether any sample is masked (p > 0): only then does a trial need its fold's centre
        classifier and CAMs (the baseline p = 0 does not)."""
        return self.p > 0


class TrainConfig(Strict):
    epochs: int = Field(300, ge=1, description="training epochs (paper: 300)")
    batch_size: int = Field(4, ge=1, description="frames per batch (paper: 4)")
    lr: float = Field(1e-5, gt=0, description="AdamW learning rate (paper: 1e-5)")
    weight_decay: float = Field(1e-2, ge=0, description="AdamW weight decay (authors' code: 0.01)")
    amp: Literal["auto", "on", "off"] = Field(
        "auto", description="bf16 autocast; auto: on GPUs with native bf16"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA where the trial was granted a GPU, else the CPU"
    )
    num_workers: int = Field(0, ge=0, description="DataLoader workers of the loader data path")
    data_path: Literal["auto", "device", "loader"] = Field(
        "auto", description="device: batches augmented on the GPU (auto on CUDA); loader: CPU"
    )
    checkpoint_every: int = Field(10, ge=1, description="epochs between periodic checkpoints")
    augment: AugmentConfig = Field(AugmentConfig(), description="training augmentations")


class FaultConfig(Strict):
    """Fault injection for reliability tests; inert by default (all None)."""

    raise_at_epoch: int | None = Field(None, ge=1, description="raise an error at this epoch")
    nan_at_epoch: int | None = Field(None, ge=1, description="poison the weights: NaN loss")
    corrupt_checkpoint: bool = Field(
        False,
        description="in a sweep, with raise_at_epoch: truncate the newest stored "
        "checkpoint before raising, as a crash mid-copy would leave it",
    )
    once: bool = Field(True, description="fire only when not resuming from a checkpoint")
    seeds: list[int] | None = Field(None, description="only trials with these seeds (None: all)")


class TrialSections(Strict):
    """The sections of a trial config — also the settings a sweep spec shares with all its
    trials (``SweepSpec`` extends this with the search space, search and resources)."""

    data: DataConfig = Field(DataConfig(), description="the dataset and its split")
    model: ModelConfig = Field(ModelConfig(), description="the segmentation model")
    classifier: ClassifierConfig = Field(ClassifierConfig(), description="the centre classifier")
    masking: MaskingConfig = Field(MaskingConfig(), description="CAM-guided masking")
    train: TrainConfig = Field(TrainConfig(), description="training settings")
    fault: FaultConfig = Field(FaultConfig(), description="reliability tests only; inert")


TRIAL_SECTIONS = tuple(TrialSections.model_fields)


class TrialConfig(TrialSections):
    """Everything one segmentation trial needs; written next to every result."""

    held_out_centre: int = Field(1, ge=1, description="the out-of-distribution test centre")
    seed: int = Field(0, description="the trial's seed: weights, shuffles, augmentations, masks")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


class ConfigError(ValueError):
    """A config file or override that does not validate; lists every problem."""


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: {exc.error_count()} problem(s):"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        value = "" if err["type"] == "missing" else f" (got {err.get('input')!r})"
        lines.append(f"  - {where}: {err['msg']}{value}")
    return "\n".join(lines)


def set_by_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Sets ``tree['a']['b'] = value`` for ``dotted='a.b'``, creating levels as needed."""
    *parents, leaf = dotted.split(".")
    node = tree
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
    node[leaf] = value


def config_field(dotted: str, model: type[BaseModel] | None = None) -> FieldInfo:
    """The pydantic field behind a dotted trial-config key (e.g. ``masking.p``): its type,
    default and description, for generated CLI flags and help."""
    model = model or TrialConfig
    head, _, rest = dotted.partition(".")
    if head not in model.model_fields:
        raise KeyError(f"{dotted!r}: no key {head!r} in {model.__name__}")
    field = model.model_fields[head]
    return config_field(rest, field.annotation) if rest else field


def with_axis_values(
    base: dict[str, Any], keys: dict[str, str], values: dict[str, Any]
) -> TrialConfig:
    """The one road from a sweep's axis values to a trial config, used by spec validation and by
    the trainable: ``base`` (the sweep's shared trial settings) with each axis value set at its
    dotted key (``keys``: axis name → key, the search-space registry). Values of names that are
    not axes (Tune's own entries) are ignored."""
    raw = json.loads(json.dumps(base))  # a deep copy of plain data
    for name, value in values.items():
        if name in keys:
            set_by_path(raw, keys[name], value)
    cfg = TrialConfig.model_validate(raw)
    # A sweep's model section is shared by all its architectures; one trained from scratch
    # (SDNet, the plain UNet) has no encoder to give the encoder settings to, so its trials
    # record none rather than fail (a trial config written by hand still gets the error).
    if not has_pretrained_encoder(cfg.model.arch, cfg.model.variant):
        cfg.model.encoder_name = cfg.model.encoder_weights = None
    return cfg


def load_trial_config(
    path: Path | str | None = None,
    overrides: dict[str, Any] | None = None,
    entry: str | None = None,
) -> TrialConfig:
    """Reads a YAML trial config (or the defaults) and applies dotted-key overrides.

    A file with a top-level ``configs`` mapping (``camsweep export``'s best_configs.yaml) holds
    several configs: ``entry`` picks one (e.g. ``unet/C1``).
    """
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file does not exist")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        if isinstance(raw.get("configs"), dict):
            entries = list(raw["configs"])
            if entry not in raw["configs"]:
                hint = "choose one with --entry" if entry is None else f"no entry {entry!r}"
                raise ConfigError(f"{path}: {hint}; entries: {', '.join(entries)}")
            raw = raw["configs"][entry]
            source = f"{path} [{entry}]"
        elif entry is not None:
            raise ConfigError(f"{path}: --entry {entry!r} given but the file holds one config")
    for key, value in (overrides or {}).items():
        set_by_path(raw, key, value)
    try:
        return TrialConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None
