"""Models by name: the one list of valid names, torch-free (builders import their module on
first use), so configs validate without loading torch."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainables.models.base import SegmentationNet


def _unet(*args: Any, **kw: Any) -> SegmentationNet:
    from trainables.models.smp_models import build_unet

    return build_unet(*args, **kw)


def _deeplabv3plus(*args: Any, **kw: Any) -> SegmentationNet:
    from trainables.models.smp_models import build_deeplabv3plus

    return build_deeplabv3plus(*args, **kw)


def _sdnet(*args: Any, **kw: Any) -> SegmentationNet:
    from trainables.models.sdnet import build_sdnet

    return build_sdnet(*args, **kw)


MODEL_REGISTRY: dict[str, Callable[..., SegmentationNet]] = {
    "unet": _unet,
    "deeplabv3plus": _deeplabv3plus,
    "sdnet": _sdnet,
}
MODEL_NAMES: tuple[str, ...] = tuple(MODEL_REGISTRY)


def has_pretrained_encoder(arch: str, variant: str) -> bool:
    """Whether a model has an encoder that takes pretrained weights: the smp UNet and DeepLabV3+
    do; SDNet and the released code's plain UNet (``unet`` variant ``authors``) train from
    scratch."""
    return arch == "deeplabv3plus" or (arch == "unet" and variant != "authors")


# "paper": the published settings. "tiny": small and fast, for tests and CPU demos at 32-64 px.
# "authors": the models of the released code (plain UNet; DeepLabV3+ with its ASPP head).
VARIANTS: tuple[str, ...] = ("paper", "tiny", "authors")

# Centre classifiers: torchvision ResNets, built by name in `centre_classifier`.
CLASSIFIER_ARCHS: tuple[str, ...] = ("resnet18", "resnet34", "resnet50")


def build_model(
    name: str,
    *,
    variant: str = "paper",
    encoder_name: str | None = None,
    encoder_weights: str | None = None,
    in_channels: int = 3,
    **kw: Any,
) -> SegmentationNet:
    """Builds a segmentation model with one polyp-logit output.

    Args:
        name: One of `MODEL_NAMES`.
        variant: One of `VARIANTS`.
        encoder_name: smp encoder overriding the variant's default (unet, deeplabv3plus only).
        encoder_weights: None (random init), a named smp weight set such as ``"imagenet"``
            (downloaded where the network allows), or a local ``.pth``/``.pt`` state-dict file
            loaded into ``model.encoder``. sdnet accepts only None.
        in_channels: Image channels.
        **kw: Architecture arguments overriding the variant's (smp constructor arguments, or
            `SDNet` arguments).

    Raises:
        ValueError: Unknown name or variant, or weights that do not fit.
        FileNotFoundError: A local weights file does not exist.
    """
    if name not in MODEL_REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    if variant not in VARIANTS:
        raise ValueError(
            f"unknown model variant {variant!r}; valid variants: {', '.join(VARIANTS)}"
        )
    return MODEL_REGISTRY[name](
        variant,
        encoder_name=encoder_name,
        encoder_weights=encoder_weights,
        in_channels=in_channels,
        **kw,
    )
