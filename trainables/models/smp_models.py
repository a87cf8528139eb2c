"""UNet and DeepLabV3+ from segmentation-models-pytorch behind the `SegmentationNet` interface."""

from __future__ import annotations

from typing import Any

import segmentation_models_pytorch as smp
from segmentation_models_pytorch.encoders.resnet import ResNetEncoder
from segmentation_models_pytorch.losses import DiceLoss
from torch import Tensor, nn

from trainables.models.base import SegmentationNet, apply_mask_factor, detached_parts
from trainables.models.plain_unet import PlainUNet
from trainables.models.weights import is_weights_path, load_weights_file

# Per variant: the default encoder and the smp constructor arguments. "paper" follows the
# authors (smp defaults; DeepLabV3+ on ResNet101). "tiny" keeps CPU tests and demos fast at
# 32-64 px; both use ResNet18 at encoder depth 3, and the stages a shallow encoder never runs are
# dropped (see `_drop_unused_stages`; a full ResNet18 state dict still loads). DeepLabV3+'s ASPP
# then works on the stride-8 map (8×8 at 64 px): at depth 5 its 11.3 M parameters took 3.4× the
# time per CPU step at 64 px and 136 MB per checkpoint, for frames this small.
# "authors" is the released code: for UNet the plain UNet from scratch (`plain_unet.py`); for
# DeepLabV3+ its VainF-style head — output stride 16, ASPP rates 6/12/18, plain (not separable)
# ASPP convolutions with dropout 0.1 — on ResNet101.
UNET_VARIANTS: dict[str, dict[str, Any]] = {
    "paper": {"encoder_name": "resnet34"},
    "tiny": {"encoder_name": "resnet18", "encoder_depth": 3, "decoder_channels": (32, 16, 8)},
}
DEEPLAB_VARIANTS: dict[str, dict[str, Any]] = {
    "paper": {"encoder_name": "resnet101"},
    "tiny": {"encoder_name": "resnet18", "encoder_depth": 3, "decoder_channels": 32},
    "authors": {
        "encoder_name": "resnet101",
        "encoder_output_stride": 16,
        "decoder_atrous_rates": (6, 12, 18),
        "decoder_aspp_separable": False,
        "decoder_aspp_dropout": 0.1,
    },
}


class SmpSegmentationNet(SegmentationNet):
    """A one-class smp model (or the plain UNet) trained with soft Dice; the mask_factor masks
    its input image.

    Args:
        net: A segmentation network with one output channel and an ``encoder``.
    """

    masking_target = "input"

    def __init__(self, net: smp.base.SegmentationModel) -> None:
        super().__init__()
        self.net = net
        self.dice = DiceLoss(mode="binary", from_logits=True)

    @property
    def encoder(self) -> nn.Module:
        """The pretrainable backbone (target of local encoder weights)."""
        return self.net.encoder

    def forward(self, x: Tensor, mask_factor: Tensor | None = None) -> dict[str, Tensor]:
        model_input = apply_mask_factor(x, mask_factor)
        return {"logits": self.net(model_input), "model_input": model_input}

    def loss(
        self, out: dict[str, Tensor], x: Tensor, y: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        # fp32 loss: under bf16 autocast the sigmoid and Dice sums lose too much precision.
        dice = self.dice(out["logits"].float(), y.float())
        return dice, detached_parts(dice=dice)


def _build(
    factory: type[smp.base.SegmentationModel],
    presets: dict[str, Any],
    encoder_name: str | None,
    encoder_weights: str | None,
    in_channels: int,
    kw: dict[str, Any],
) -> SmpSegmentationNet:
    args = {**presets, **kw}
    if encoder_name is not None:
        args["encoder_name"] = encoder_name
    local = encoder_weights is not None and is_weights_path(encoder_weights)
    net = factory(
        encoder_weights=None if local else encoder_weights,
        in_channels=in_channels,
        classes=1,
        **args,
    )
    dropped = _drop_unused_stages(net.encoder, args.get("encoder_depth", 5))
    model = SmpSegmentationNet(net)
    if local:
        # "fc." (and dropped stages) are skipped so a torchvision ResNet checkpoint loads.
        skip = ("fc.", *(f"{name}." for name in dropped))
        load_weights_file(model.encoder, encoder_weights, what="encoder", ignore_prefixes=skip)
    return model


def _drop_unused_stages(encoder: nn.Module, depth: int) -> tuple[str, ...]:
    """A ResNet encoder of depth < 5 never runs its deeper stages, yet smp keeps them: they cost
    memory and checkpoint bytes (the tiny UNet's 11.2 M parameters are 10.5 M of them: 96 MB per
    checkpoint instead of 3) and never get a gradient. Dropping them after construction changes
    nothing computed: the random init drew them in the same order, and AdamW skips gradient-less
    parameters. Returns the names dropped."""
    if not isinstance(encoder, ResNetEncoder):
        return ()
    dropped = tuple(f"layer{d - 1}" for d in range(depth + 1, 6))  # depth 3: layer3, layer4
    for name in dropped:
        delattr(encoder, name)
    return dropped


def build_unet(
    variant: str,
    *,
    encoder_name: str | None = None,
    encoder_weights: str | None = None,
    in_channels: int = 3,
    **kw: Any,
) -> SmpSegmentationNet:
    """smp `Unet` (paper: ResNet34 encoder), or the released code's plain UNet for variant
    ``authors``; `kw` overrides the constructor arguments."""
    if variant == "authors":
        if encoder_name is not None or encoder_weights is not None:
            raise ValueError(
                "model.variant authors of unet is the plain UNet trained from scratch: it takes "
                f"no encoder_name or encoder_weights (got {encoder_name!r}, {encoder_weights!r})"
            )
        return SmpSegmentationNet(PlainUNet(in_channels, classes=1, **kw))
    return _build(smp.Unet, UNET_VARIANTS[variant], encoder_name, encoder_weights, in_channels, kw)


def build_deeplabv3plus(
    variant: str,
    *,
    encoder_name: str | None = None,
    encoder_weights: str | None = None,
    in_channels: int = 3,
    **kw: Any,
) -> SmpSegmentationNet:
    """smp `DeepLabV3Plus` (paper: ResNet101 encoder); `kw` overrides smp constructor arguments."""
    presets = DEEPLAB_VARIANTS[variant]
    return _build(smp.DeepLabV3Plus, presets, encoder_name, encoder_weights, in_channels, kw)
