"""The pretrained weights a sweep needs, the caches trials read them from, and
``camsweep weights fetch``.

Trials never download: GPU nodes of academic clusters have no internet, and a download that
fails at trial start fails only once the sweep has begun. ``camsweep weights fetch SPEC`` (run
where there is internet) puts every named weight set the spec needs into the caches trials read
— ``weights.cache`` of the spec or, unset, TORCH_HOME and the Hugging Face hub cache — the
preflight (``sweeps/preflight.py``) checks that every node finds them, and the sweep's Ray
workers run with HF_HUB_OFFLINE=1 and those caches (:func:`trial_env`).

Where the weights come from is what the installed libraries say (their URLs stay the default):

- smp encoders (``model.encoder_weights: imagenet``): smp 0.6 loads ``config.json`` and
  ``model.safetensors`` of a Hugging Face repo at a pinned commit (``smp-hub/resnet34.imagenet``)
  with ``hf_hub_download`` into HF_HUB_CACHE; HF_ENDPOINT selects a mirror.
- timm encoders (``tu-<name>``): the model's ``hf_hub_id`` (``model.safetensors``), or its URL.
- the centre classifier (``classifier.weights: imagenet``): torchvision's DEFAULT ImageNet
  weights, a URL on download.pytorch.org that torchvision keeps as
  ``<torch hub dir>/checkpoints/<file name>``, its name carrying a SHA-256 prefix.
- local files (any path): read as they are; nothing to fetch, but every node must see them.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from trainables.models.weights import is_weights_path

if TYPE_CHECKING:
    from sweeps.spec import SweepSpec
    from trainables.config import ClassifierConfig, ModelConfig


@dataclass(frozen=True)
class Caches:
    """The folders weights are read from: the torch hub's checkpoints (torchvision, timm URLs)
    and the Hugging Face hub cache (smp, timm)."""

    checkpoints: Path
    hf_hub: Path

    @classmethod
    def here(cls, cache: str | None) -> Caches:
        """``cache`` (the spec's ``weights.cache``), else this process's own: what the libraries
        read here, from TORCH_HOME, HF_HOME, HF_HUB_CACHE or their defaults."""
        if cache:
            root = Path(cache).expanduser()
            return cls(root / "torch" / "hub" / "checkpoints", root / "huggingface" / "hub")
        import torch.hub
        from huggingface_hub import constants

        return cls(Path(torch.hub.get_dir()) / "checkpoints", Path(constants.HF_HUB_CACHE))

    def env(self) -> dict[str, str]:
        """The environment that makes torch and huggingface_hub read these folders."""
        return {"TORCH_HOME": str(self.checkpoints.parent.parent), "HF_HUB_CACHE": str(self.hf_hub)}


def trial_env(cache: str | None) -> dict[str, str]:
    """Environment of the sweep's Ray workers: no Hugging Face downloads (the preflight has
    checked the weights are there), and the spec's cache if it names one."""
    return {"HF_HUB_OFFLINE": "1", **(Caches.here(cache).env() if cache else {})}


@dataclass(frozen=True)
class HubWeight:
    """Files of a Hugging Face repo at a revision (None: ``main``)."""

    key: str  # the spec key that asks for it
    what: str
    repo_id: str
    revision: str | None
    filenames: tuple[str, ...]

    def missing(self, caches: Caches) -> str | None:
        from huggingface_hub import try_to_load_from_cache

        absent = [
            f
            for f in self.filenames
            if not isinstance(
                try_to_load_from_cache(
                    self.repo_id, f, cache_dir=caches.hf_hub, revision=self.revision
                ),
                str,
            )
        ]
        return f"{', '.join(absent)} not in {caches.hf_hub}" if absent else None

    def fetch(self, caches: Caches) -> None:
        from huggingface_hub import constants, hf_hub_download

        if constants.HF_HUB_OFFLINE:  # read when huggingface_hub was imported
            raise ValueError(
                f"{self.repo_id}: HF_HUB_OFFLINE is set here — fetching needs the network: run "
                "`camsweep weights fetch` without it, on a machine with internet"
            )
        for filename in self.filenames:
            hf_hub_download(
                self.repo_id,
                filename,
                revision=self.revision,
                cache_dir=caches.hf_hub,
                # Read now (huggingface_hub reads it once, at import): a mirror, or a test's server.
                endpoint=os.environ.get("HF_ENDPOINT") or None,
            )

    def source(self) -> str:
        return f"Hugging Face {self.repo_id}" + (f"@{self.revision[:8]}" if self.revision else "")


@dataclass(frozen=True)
class UrlWeight:
    """One file downloaded from a URL into the torch hub's checkpoints, as torch.hub names it."""

    key: str
    what: str
    url: str
    filename: str
    sha256_prefix: str | None  # torch.hub's check: the hex digits in the file name

    def missing(self, caches: Caches) -> str | None:
        path = caches.checkpoints / self.filename
        return None if path.is_file() else f"{path} not found"

    def fetch(self, caches: Caches) -> None:
        from torch.hub import download_url_to_file

        caches.checkpoints.mkdir(parents=True, exist_ok=True)
        # Written to a temp file and moved into place by torch, so a broken download leaves
        # nothing that a later preflight would take for the weights.
        download_url_to_file(
            self.url,
            str(caches.checkpoints / self.filename),
            hash_prefix=self.sha256_prefix,
            progress=sys.stderr.isatty(),
        )

    def source(self) -> str:
        return self.url


@dataclass(frozen=True)
class FileWeight:
    """A local state-dict file: read where it is."""

    key: str
    what: str
    path: str

    def missing(self, caches: Caches) -> str | None:
        path = Path(self.path).expanduser()
        if not path.is_file():
            return f"file {path} not found — put it on a filesystem every node mounts"
        if not os.access(path, os.R_OK):
            return f"file {path} is not readable"
        return None

    def fetch(self, caches: Caches) -> None:
        missing = self.missing(caches)
        if missing:
            raise FileNotFoundError(f"{self.key}: {missing}")

    def source(self) -> str:
        return "local file"


Weight = HubWeight | UrlWeight | FileWeight

_HASH_IN_NAME = re.compile(r"-([a-f0-9]*)\.")  # torch.hub's HASH_REGEX


def torchvision_weight(arch: str) -> UrlWeight:
    """torchvision's DEFAULT ImageNet weights of a classifier ResNet (what
    ``build_centre_classifier(weights="imagenet")`` loads). Tests replace this function to point
    the URL at a stand-in server."""
    from torchvision import models as tvm

    url = getattr(tvm, f"ResNet{arch.removeprefix('resnet')}_Weights").DEFAULT.url
    name = url.rsplit("/", 1)[-1]
    digest = _HASH_IN_NAME.search(name)
    return UrlWeight(
        "classifier.weights", f"{arch} classifier (imagenet)", url, name, digest and digest[1]
    )


def encoder_of(model: ModelConfig, arch: str) -> str | None:
    """The smp encoder a trial of ``arch`` builds; None when it has no pretrainable encoder
    (SDNet, the released code's plain UNet)."""
    from trainables.models.registry import has_pretrained_encoder
    from trainables.models.smp_models import DEEPLAB_VARIANTS, UNET_VARIANTS

    if not has_pretrained_encoder(arch, model.variant):
        return None
    variants = {"unet": UNET_VARIANTS, "deeplabv3plus": DEEPLAB_VARIANTS}[arch]
    return model.encoder_name or variants[model.variant]["encoder_name"]


def encoder_weight(model: ModelConfig, arch: str) -> Weight | None:
    """What ``build_model(arch, ...)`` of this model config loads as encoder weights (its
    ``what`` names the encoder; :func:`required_weights` adds the architectures).

    Raises:
        ValueError: an encoder or weight set smp does not have.
    """
    weights, encoder = model.encoder_weights, encoder_of(model, arch)
    if weights is None or encoder is None:
        return None
    what = f"{encoder} encoder ({weights})"
    if is_weights_path(weights):
        return FileWeight("model.encoder_weights", what, weights)
    if encoder.startswith("tu-"):  # timm's own pretrained weights; the tag is in the name
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(encoder.removeprefix("tu-"))
        if cfg is not None and cfg.hf_hub_id:
            repo, _, revision = cfg.hf_hub_id.partition("@")
            return HubWeight(
                "model.encoder_weights", what, repo, revision or None, ("model.safetensors",)
            )
        if cfg is not None and cfg.url:
            name = cfg.url.rsplit("/", 1)[-1]
            return UrlWeight("model.encoder_weights", what, cfg.url, name, None)
        raise ValueError(f"model.encoder_name {encoder}: timm has no pretrained weights for it")
    from segmentation_models_pytorch.encoders import encoders

    settings = encoders.get(encoder, {}).get("pretrained_settings", {})
    if weights not in settings:
        raise ValueError(
            f"model.encoder_weights {weights!r}: encoder {encoder} has "
            f"{', '.join(settings) or 'no named weights'}"
        )
    repo = settings[weights]
    return HubWeight(
        "model.encoder_weights",
        what,
        repo["repo_id"],
        repo["revision"],
        ("config.json", "model.safetensors"),  # the two files smp's get_encoder loads
    )


def classifier_weight(classifier: ClassifierConfig) -> Weight | None:
    """What ``build_centre_classifier`` loads for this classifier config."""
    if classifier.weights is None:
        return None
    if is_weights_path(classifier.weights):
        return FileWeight("classifier.weights", f"{classifier.arch} classifier", classifier.weights)
    return torchvision_weight(classifier.arch)


def required_weights(spec: SweepSpec) -> list[Weight]:
    """Every pretrained weight the sweep's trials and fold preparations load, each once (an
    encoder shared by several architectures names them all)."""
    users: dict[Weight, list[str]] = {}
    for arch in spec.values_of("arch", spec.model.arch):
        for encoder in spec.values_of("encoder_name", spec.model.encoder_name):
            model = spec.trial_config({"arch": arch, "encoder_name": encoder}).model
            weight = encoder_weight(model, arch)
            if weight is not None and arch not in users.setdefault(weight, []):
                users[weight].append(arch)
    found = [replace(w, what=f"{w.what} of {', '.join(archs)}") for w, archs in users.items()]
    if spec.any_trial_masks():  # only folds that mask train the centre classifier
        found += [w for w in [classifier_weight(spec.classifier)] if w is not None]
    return found


def fetch_weights(
    spec: SweepSpec, *, report: Callable[[str], None] = print
) -> tuple[list[Weight], list[Weight]]:
    """Downloads what the spec needs and the caches lack; returns (fetched, already there).

    Raises:
        FileNotFoundError: a local weights file of the spec does not exist here.
        ValueError: a download failed (the message names the weight and the error).
    """
    caches = Caches.here(spec.weights_cache())
    fetched, present = [], []
    for weight in required_weights(spec):
        if weight.missing(caches) is None:
            present.append(weight)
            report(f"present   {weight.key}: {weight.what} ({weight.source()})")
            continue
        report(f"fetching  {weight.key}: {weight.what} from {weight.source()}")
        try:
            weight.fetch(caches)
        except (OSError, RuntimeError) as exc:  # no network, an HTTP error, a bad hash, disk full
            if isinstance(weight, FileWeight):  # its own message: the file is not there
                raise
            raise ValueError(
                f"{weight.key}: {weight.what}: download from {weight.source()} failed ({exc})"
            ) from exc
        fetched.append(weight)
    return fetched, present
