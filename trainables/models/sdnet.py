"""SDNet (Chartsias et al., 2019): spatial anatomy factors, a VAE modality code, AdaIN decoder.

The CAM mask_factor multiplies the binary anatomy factors before the segmentor only; the decoder and
the modality encoder keep the unmasked anatomy, so the augmentation leaves the reconstruction
task untouched (Corbetta et al., 2023).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss
from torch import Tensor, nn

from trainables.models.base import SegmentationNet, apply_mask_factor, detached_parts

# The authors' loss weights.
LOSS_WEIGHTS: dict[str, float] = {"recon": 1.0, "kl": 0.01, "dice": 10.0, "latent": 1.0}

SDNET_VARIANTS: dict[str, dict[str, int]] = {
    "paper": {
        "unet_width": 64,
        "unet_depth": 4,
        "modality_width": 16,
        "decoder_width": 64,
        "seg_width": 64,
    },
    "tiny": {
        "unet_width": 8,
        "unet_depth": 2,
        "modality_width": 8,
        "decoder_width": 8,
        "seg_width": 16,
    },
}
SDNET_VARIANTS["authors"] = SDNET_VARIANTS["paper"]  # the released SDNet has the same sizes


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class AnatomyUNet(nn.Module):
    """Plain convolutional UNet mapping an image to per-pixel anatomy-factor logits."""

    def __init__(self, in_channels: int, out_channels: int, width: int, depth: int) -> None:
        super().__init__()
        chans = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList(
            nn.Sequential(*_conv_bn_relu(cin, cout), *_conv_bn_relu(cout, cout))
            for cin, cout in zip([in_channels, *chans[:-1]], chans, strict=True)
        )
        self.up = nn.ModuleList(
            nn.Sequential(
                *_conv_bn_relu(chans[i + 1] + chans[i], chans[i]),
                *_conv_bn_relu(chans[i], chans[i]),
            )
            for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(chans[0], out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for block in self.up:
            skip = skips.pop()
            # Upsampling to the skip's exact size keeps odd image sizes working.
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


class ModalityEncoder(nn.Module):
    """VAE encoder: (anatomy, image) -> mean and log-variance of the modality code."""

    def __init__(self, in_channels: int, z_dim: int, width: int, n_down: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for i in range(n_down):
            cout = width * 2**i
            layers += [
                nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            cin = cout
        # Global pooling instead of a flatten keeps the encoder independent of the image size.
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.mu = nn.Linear(cin, z_dim)
        self.logvar = nn.Linear(cin, z_dim)

    def forward(self, anatomy: Tensor, image: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(torch.cat([anatomy, image], dim=1))
        return self.mu(h), self.logvar(h)


class AdaIN(nn.Module):
    """Instance normalisation whose per-channel scale and shift are predicted from z."""

    def __init__(self, channels: int, z_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(z_dim, channels), nn.ReLU(inplace=True), nn.Linear(channels, 2 * channels)
        )

    def forward(self, h: Tensor, z: Tensor) -> Tensor:
        gamma, beta = self.mlp(z)[..., None, None].chunk(2, dim=1)
        # 1 + gamma: an untrained MLP then starts near plain instance normalisation.
        return F.instance_norm(h) * (1 + gamma) + beta


class AdaINDecoder(nn.Module):
    """Reconstructs the image from the anatomy factors, modulated by the modality code."""

    def __init__(self, anatomy_channels: int, out_channels: int, z_dim: int, width: int) -> None:
        super().__init__()
        cins = [anatomy_channels, width, width]
        self.convs = nn.ModuleList(nn.Conv2d(c, width, 3, padding=1) for c in cins)
        self.norms = nn.ModuleList(AdaIN(width, z_dim) for _ in cins)
        # Linear output: the target is an ImageNet-normalised image, not bounded to [0, 1].
        self.out = nn.Conv2d(width, out_channels, 3, padding=1)

    def forward(self, anatomy: Tensor, z: Tensor) -> Tensor:
        h = anatomy
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = F.relu(norm(conv(h), z))
        return self.out(h)


class SDNet(SegmentationNet):
    """Spatial Decomposition Network with a two-class (background, polyp) segmentor.

    Args:
        in_channels: Image channels (also the reconstruction's).
        anatomy_channels: Number of binary anatomy factors.
        z_dim: Length of the modality code.
        unet_width: Base width of the anatomy UNet.
        unet_depth: Number of downsamplings of the anatomy UNet.
        modality_width: Width of the first modality-encoder convolution (doubles per stage).
        decoder_width: Width of the AdaIN decoder.
        seg_width: Width of the segmentor's two convolutions.
        tau: Gumbel-softmax temperature.
        loss_weights: Overrides of `LOSS_WEIGHTS` (keys recon, kl, dice, latent).
    """

    masking_target = "anatomy"

    def __init__(
        self,
        in_channels: int = 3,
        *,
        anatomy_channels: int = 8,
        z_dim: int = 8,
        unet_width: int = 64,
        unet_depth: int = 4,
        modality_width: int = 16,
        decoder_width: int = 64,
        seg_width: int = 64,
        tau: float = 1.0,
        loss_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        unknown = set(loss_weights or {}) - LOSS_WEIGHTS.keys()
        if unknown:
            raise ValueError(
                f"unknown SDNet loss weights {sorted(unknown)}; valid: {sorted(LOSS_WEIGHTS)}"
            )
        self.in_channels = in_channels
        self.tau = tau
        self.loss_weights = {**LOSS_WEIGHTS, **(loss_weights or {})}
        self.anatomy_encoder = AnatomyUNet(in_channels, anatomy_channels, unet_width, unet_depth)
        self.modality_encoder = ModalityEncoder(
            anatomy_channels + in_channels, z_dim, modality_width
        )
        self.decoder = AdaINDecoder(anatomy_channels, in_channels, z_dim, decoder_width)
        self.segmentor = nn.Sequential(
            *_conv_bn_relu(anatomy_channels, seg_width),
            *_conv_bn_relu(seg_width, seg_width),
            nn.Conv2d(seg_width, 2, 1),
        )
        self.dice = DiceLoss(mode="binary", from_logits=True)

    def _binarise(self, logits: Tensor) -> Tensor:
        if self.training:
            # Straight-through: one-hot forward, softmax gradient backward.
            # Noise drawn in fp32: under bf16 autocast the Gumbel samples would be coarse and
            # their tail cut off.
            return F.gumbel_softmax(logits.float(), tau=self.tau, hard=True, dim=1).to(logits.dtype)
        # Noise-free argmax so evaluation is deterministic.
        return F.one_hot(logits.argmax(dim=1), logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)

    def forward(self, x: Tensor, mask_factor: Tensor | None = None) -> dict[str, Tensor]:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"SDNet expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        anatomy = self._binarise(self.anatomy_encoder(x))
        mu, logvar = self.modality_encoder(anatomy, x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        reconstruction = self.decoder(anatomy, z)
        z_rec, _ = self.modality_encoder(anatomy, reconstruction)
        seg_logits = self.segmentor(apply_mask_factor(anatomy, mask_factor))
        return {
            # Polyp minus background logit: its sigmoid is the softmax polyp probability.
            "logits": seg_logits[:, 1:2] - seg_logits[:, 0:1],
            "seg_logits": seg_logits,
            "model_input": x,
            "anatomy": anatomy,
            "reconstruction": reconstruction,
            "mu": mu,
            "logvar": logvar,
            "z": z,
            "z_rec": z_rec,
        }

    def loss(
        self, out: dict[str, Tensor], x: Tensor, y: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        # fp32 loss: under bf16 autocast the sums and exp() lose too much precision.
        f = {k: out[k].float() for k in ("reconstruction", "mu", "logvar", "logits", "z", "z_rec")}
        mu, logvar = f["mu"], f["logvar"]
        parts = {
            "recon": F.l1_loss(f["reconstruction"], x.float()),
            "kl": (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean(),
            "dice": self.dice(f["logits"], y.float()),
            "latent": F.l1_loss(f["z_rec"], f["z"]),
        }
        total = sum(self.loss_weights[k] * v for k, v in parts.items())
        return total, detached_parts(**parts)


def build_sdnet(
    variant: str,
    *,
    encoder_name: str | None = None,
    encoder_weights: str | None = None,
    in_channels: int = 3,
    **kw: Any,
) -> SDNet:
    """SDNet of a variant's size; `kw` overrides `SDNet` constructor arguments."""
    if encoder_name is not None or encoder_weights is not None:
        raise ValueError(
            "sdnet is trained from scratch and has no pretrained encoder: got "
            f"encoder_name={encoder_name!r}, encoder_weights={encoder_weights!r}; leave both None"
        )
    return SDNet(in_channels, **{**SDNET_VARIANTS[variant], **kw})
