"""The plain UNet of the authors' released code (the classic UNet of Ronneberger et al. in its
common PyTorch form): four max-pool downs of two conv-BN-ReLU each (64 → 512 channels, the last
halved for bilinear up-sampling), four bilinear ups with skip connections, random init. Used as
``model.variant: authors`` of ``unet``. One polyp logit, as every camsweep model (the released
code has two softmax classes; with a Dice loss the two are equivalent up to parametrisation)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DoubleConv(nn.Sequential):
    """(3×3 conv → BatchNorm → ReLU) × 2."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None):
        mid = mid_channels or out_channels
        super().__init__(
            nn.Conv2d(in_channels, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class Up(nn.Module):
    """Bilinear ×2 up-sampling, concatenation with the skip, DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = DoubleConv(in_channels, out_channels, in_channels // 2)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.up(x)
        # Odd sizes: pad the up-sampled map to the skip's size before concatenating.
        dy, dx = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class PlainUNet(nn.Module):
    """``in_channels`` → one logit map of the same size; ``width`` is the first stage's
    channels (64 in the released code)."""

    def __init__(self, in_channels: int = 3, classes: int = 1, width: int = 64):
        super().__init__()
        w = width
        self.encoder = nn.ModuleList(
            [
                DoubleConv(in_channels, w),
                *(nn.Sequential(nn.MaxPool2d(2), DoubleConv(a, b))
                  for a, b in ((w, 2 * w), (2 * w, 4 * w), (4 * w, 8 * w), (8 * w, 8 * w)))
            ]
        )  # fmt: skip
        self.decoder = nn.ModuleList(
            [Up(16 * w, 4 * w), Up(8 * w, 2 * w), Up(4 * w, w), Up(2 * w, w)]
        )
        self.head = nn.Conv2d(w, classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        for up in self.decoder:
            x = up(x, skips.pop())
        return self.head(x)
