"""An exported model folder: what `camsweep export` writes per architecture and `camsweep predict`
/ `camsweep evaluate` read.

Layout::

    <arch>/manifest.json            selection rule, arm, preprocessing, versions, members, missing
    <arch>/C<k>-seed<s>/weights.pt  best-validation weights (a plain state dict)
    <arch>/C<k>-seed<s>/config.yaml the resolved trial config (runnable with `camsweep train`)

One *member* per held-out fold and seed of the selected setting. The folder needs nothing from
the run it came from; reading the manifest does not import torch (loading weights does).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from torch import nn

MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "weights.pt"
MEMBER_CONFIG_FILE = "config.yaml"
# Bumped whenever the folder's layout or the meaning of a manifest field changes.
MODEL_FORMAT = 1


class ModelFolderError(ValueError):
    """A model folder that cannot be used: missing files, another camsweep version, bad folds."""


def installed_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def camsweep_version() -> str:
    return installed_version("camsweep")


@dataclass(frozen=True)
class Preprocessing:
    """How a frame becomes the network's input, and how its output becomes a mask: the same
    path as training (``trainables.data.decode.read_image`` at ``image_size``, ImageNet
    statistics, foreground where the probability is ``> threshold``)."""

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    threshold: float
    resize: str = "area (cv2.INTER_AREA) to image_size x image_size; RGB (grayscale converted)"

    @classmethod
    def of_training(cls, image_size: int) -> Preprocessing:
        """The preprocessing every trial trains with, at ``image_size``."""
        from trainables.data.augment import IMAGENET_MEAN, IMAGENET_STD
        from trainables.metrics import PROB_THRESHOLD

        return cls(image_size, IMAGENET_MEAN, IMAGENET_STD, PROB_THRESHOLD)


@dataclass(frozen=True)
class Member:
    """One model of the ensemble: the selected setting's trial for one fold and seed."""

    fold: int  # the held-out centre it never saw
    seed: int
    trial_id: str
    setting: str  # the swept axes' values, e.g. "p=0.5"
    p: float
    best_epoch: int
    folder: str  # relative to the model folder
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"C{self.fold} seed {self.seed}"


@dataclass
class ModelManifest:
    """The manifest of a model folder, and the folder it was read from."""

    arch: str
    selection: str  # the rule, e.g. "validation: val/dice"
    arm: str  # best | baseline | augmented
    preprocessing: Preprocessing
    members: list[Member]
    missing: list[dict[str, Any]]  # {"fold": k, "reason": ...}: folds without a model
    sweep: dict[str, Any]
    versions: dict[str, str]
    format: int = MODEL_FORMAT
    path: Path | None = None

    def to_json(self) -> str:
        out = asdict(self)
        out.pop("path")
        return json.dumps(out, indent=2)

    def write(self, path: Path) -> None:
        """Writes the manifest into ``path`` (the members' files are already there)."""
        (path / MANIFEST_FILE).write_text(self.to_json())

    @property
    def folds(self) -> list[int]:
        return sorted({m.fold for m in self.members})

    def member_dir(self, member: Member) -> Path:
        assert self.path is not None
        return self.path / member.folder

    def member_config(self, member: Member) -> dict[str, Any]:
        return yaml.safe_load((self.member_dir(member) / MEMBER_CONFIG_FILE).read_text())

    def select(self, folds: list[int] | None) -> list[Member]:
        """The members of the given folds (all seeds); all members when ``folds`` is None."""
        if folds is None:
            return list(self.members)
        unknown = [k for k in folds if k not in self.folds]
        if unknown:
            have = ", ".join(f"C{k}" for k in self.folds)
            raise ModelFolderError(
                f"{self.path}: --folds {', '.join(f'C{k}' for k in unknown)} not in this model "
                f"(it has {have})"
            )
        return [m for m in self.members if m.fold in folds]


def parse_folds(text: str | None) -> list[int] | None:
    """``"C1,C3"`` (or ``"1,3"``) → [1, 3]; None → None (every fold)."""
    if text is None:
        return None
    folds = []
    for part in text.split(","):
        digits = part.strip().upper().removeprefix("C")
        if not digits.isdigit():
            raise ModelFolderError(f"--folds {text!r}: {part.strip()!r} is not a fold like C1")
        folds.append(int(digits))
    return sorted(set(folds))


def read_model_folder(path: Path | str) -> ModelManifest:
    """Reads and checks a model folder: the manifest, its format and camsweep version, and that
    every member's files are there. Loads no weights.

    Raises:
        ModelFolderError: naming the folder or file at fault.
    """
    path = Path(path).expanduser()
    manifest_file = path / MANIFEST_FILE
    if not path.is_dir():
        raise ModelFolderError(f"{path}: model folder does not exist")
    if not manifest_file.is_file():
        raise ModelFolderError(
            f"{manifest_file}: missing — not a camsweep model folder (`camsweep export RUN` "
            "writes them under RUN/export/models/<arch>)"
        )
    try:
        raw = json.loads(manifest_file.read_text())
    except ValueError as exc:
        raise ModelFolderError(f"{manifest_file}: unreadable manifest ({exc})") from None
    if raw.get("format") != MODEL_FORMAT:
        raise ModelFolderError(
            f"{manifest_file}: model folder format {raw.get('format')!r}, this camsweep reads "
            f"format {MODEL_FORMAT}"
        )
    exported_by = raw.get("versions", {}).get("camsweep")
    if exported_by != camsweep_version():
        raise ModelFolderError(
            f"{manifest_file}: exported by camsweep {exported_by}, this is camsweep "
            f"{camsweep_version()} — install camsweep=={exported_by} to use it, or export the run "
            "again with this version"
        )
    try:
        manifest = ModelManifest(
            arch=raw["arch"],
            selection=raw["selection"],
            arm=raw["arm"],
            preprocessing=Preprocessing(**raw["preprocessing"]),
            members=[Member(**m) for m in raw["members"]],
            missing=raw["missing"],
            sweep=raw["sweep"],
            versions=raw["versions"],
            path=path,
        )
    except (KeyError, TypeError) as exc:
        raise ModelFolderError(f"{manifest_file}: incomplete manifest ({exc})") from None
    if not manifest.members:
        raise ModelFolderError(f"{manifest_file}: lists no models (every fold is missing)")
    for member in manifest.members:
        for name in (WEIGHTS_FILE, MEMBER_CONFIG_FILE):
            file = manifest.member_dir(member) / name
            if not file.is_file():
                raise ModelFolderError(f"{file}: missing ({member.name} of {path})")
    return manifest


def write_member(model_dir: Path, folder: str, state_dict: dict, config: dict[str, Any]) -> None:
    """Writes one member's weights (a plain state dict, loadable with ``weights_only``) and its
    resolved trial config into ``model_dir/folder``."""
    import torch

    (model_dir / folder).mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, model_dir / folder / WEIGHTS_FILE)
    (model_dir / folder / MEMBER_CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))


def load_member(manifest: ModelManifest, member: Member) -> nn.Module:
    """The member's network with its weights, in eval mode, on the CPU."""
    import torch

    from trainables.config import TrialConfig
    from trainables.models import build_model

    cfg = TrialConfig.model_validate(manifest.member_config(member))
    # The weights come from the file: never fetch the encoder's pretrained ones.
    model = build_model(
        cfg.model.arch,
        variant=cfg.model.variant,
        encoder_name=cfg.model.encoder_name,
        encoder_weights=None,
    )
    file = manifest.member_dir(member) / WEIGHTS_FILE
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # truncated file, another architecture's weights, ...
        raise ModelFolderError(f"{file}: cannot load {member.name}'s weights ({exc})") from exc
    return model.eval()


def write_untrained(
    path: Path,
    *,
    folds: tuple[int, ...],
    arch: str = "unet",
    variant: str = "tiny",
    image_size: int = 64,
) -> ModelManifest:
    """A model folder in the exported layout whose members are untrained (each fold its own
    random init): for benchmarks and tests of predict/evaluate that need no sweep."""
    import torch

    from trainables.config import TrialConfig
    from trainables.models import build_model

    members = []
    for k in folds:
        cfg = TrialConfig.model_validate(
            {
                "held_out_centre": k,
                "model": {"arch": arch, "variant": variant},
                "data": {"image_size": image_size},
            }
        )
        torch.manual_seed(k)
        folder = f"C{k}-seed0"
        write_member(path, folder, build_model(arch, variant=variant).state_dict(), cfg.to_dict())
        members.append(Member(k, 0, f"untrained-C{k}", "untrained", 0.0, 0, folder))
    manifest = ModelManifest(
        arch=arch,
        selection="none (untrained)",
        arm="best",
        preprocessing=Preprocessing.of_training(image_size),
        members=members,
        missing=[],
        sweep={"name": "untrained"},
        versions={"camsweep": camsweep_version()},
        path=path,
    )
    manifest.write(path)
    return manifest
