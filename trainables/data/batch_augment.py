"""Batched, device-resident version of the training augmentations in ``augment.py``.

Same transforms, order and probabilities as the albumentations pipeline — rotation, horizontal
flip, vertical flip, colour jitter, normalisation — but applied to whole ``(B, C, H, W)`` batches
with tensor ops (grid_sample for the rotation), so they run where the batch lives. Every random
choice is a per-sample tensor. On a GPU, samples are selected with ``torch.where`` and nothing
waits for the host; on CPU only the drawn samples are computed (see ``BatchAugment``).

Randomness is split from computation: :meth:`BatchAugment.sample_params` draws an
:class:`AugmentParams` from a ``torch.Generator`` and :meth:`BatchAugment.apply` applies given
parameters, so known parameters can be checked against albumentations.

Differences from albumentations on uint8 images, all below a few grey levels (measured in
``tests/test_batch_augment.py``): the image stays float32 instead of being rounded (or, for
brightness and contrast, truncated) to uint8 after every step, and OpenCV's fixed-point bilinear
weights and uint8 HSV arithmetic are replaced by float maths.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

from trainables.data.augment import IMAGENET_MEAN, IMAGENET_STD, AugmentConfig

# albumentations 2.0.8 ColorJitter defaults (the pipeline in augment.py uses them unchanged).
BRIGHTNESS_RANGE = (0.8, 1.2)
CONTRAST_RANGE = (0.8, 1.2)
SATURATION_RANGE = (0.8, 1.2)
HUE_RANGE = (-0.5, 0.5)

# Colour-jitter operations, numbered as albumentations' ColorJitter.transforms list.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3

# How a transform that applies to some samples of a batch reaches them (see BatchAugment).
ROW_SELECTION = ("auto", "index", "where")

_MAX = 255.0  # images are processed on the 0–255 scale, like albumentations' uint8 pipeline
_GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as OpenCV's COLOR_RGB2GRAY


@dataclass(frozen=True)
class AugmentParams:
    """Per-sample augmentation parameters of one batch; every field has leading dimension B.

    Attributes:
        rotate: (B,) bool, whether the sample is rotated.
        angle: (B,) float, rotation in degrees, counter-clockwise as seen on screen (OpenCV and
            albumentations convention).
        hflip: (B,) bool, horizontal flip (after the rotation).
        vflip: (B,) bool, vertical flip (after the horizontal flip).
        jitter: (B,) bool, whether colour jitter is applied.
        brightness: (B,) float, multiplicative brightness factor.
        contrast: (B,) float, contrast factor (blend with the mean grey level).
        saturation: (B,) float, saturation factor (blend with the grey image).
        hue: (B,) float, hue shift as a fraction of a full turn.
        order: (B, 4) long, the order in which the four jitter operations are applied, a
            permutation of (BRIGHTNESS, CONTRAST, SATURATION, HUE).
    """

    rotate: Tensor
    angle: Tensor
    hflip: Tensor
    vflip: Tensor
    jitter: Tensor
    brightness: Tensor
    contrast: Tensor
    saturation: Tensor
    hue: Tensor
    order: Tensor

    @classmethod
    def identity(cls, batch_size: int, device: torch.device | str = "cpu") -> AugmentParams:
        """Parameters that change nothing (a base for hand-set parameters)."""
        off = torch.zeros(batch_size, dtype=torch.bool, device=device)
        zero = torch.zeros(batch_size, device=device)
        one = torch.ones(batch_size, device=device)
        order = torch.arange(4, device=device).expand(batch_size, 4).clone()
        return cls(off, zero, off, off, off, one, one, one, zero, order)

    def to(self, device: torch.device | str) -> AugmentParams:
        return AugmentParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


class BatchAugment:
    """The training augmentations of ``augment.build_train_transform`` on whole batches.

    Args:
        cfg: probabilities and rotation limit (the object the albumentations pipeline takes).
        row_selection: how a transform reaches only the samples drawn for it. ``"where"``
            transforms every sample and keeps the drawn ones with ``torch.where``: no host
            synchronisation, right for GPUs. ``"index"`` gathers the drawn samples, transforms
            them and writes them back: it reads the draw on the host, which costs nothing on a
            CPU and saves the work on the other samples. ``"auto"`` (default) picks ``"index"``
            for CPU tensors and ``"where"`` elsewhere. Both give the same result.
    """

    def __init__(self, cfg: AugmentConfig, *, row_selection: str = "auto"):
        if row_selection not in ROW_SELECTION:
            raise ValueError(f"row_selection {row_selection!r}; valid: {', '.join(ROW_SELECTION)}")
        self.cfg = cfg
        self.row_selection = row_selection

    def sample_params(self, batch_size: int, generator: torch.Generator) -> AugmentParams:
        """Draws the parameters of one batch on ``generator``'s device."""
        cfg, device = self.cfg, generator.device
        # Two draws for the whole batch: on CPU the per-call overhead of small ops adds up.
        coins = torch.rand(batch_size, 4, generator=generator, device=device)
        u = torch.rand(batch_size, 5, generator=generator, device=device)

        def uniform(column: int, lo: float, hi: float) -> Tensor:
            return lo + (hi - lo) * u[:, column]

        return AugmentParams(
            rotate=coins[:, 0] < cfg.rotate_p,
            angle=uniform(0, -cfg.rotate_limit, cfg.rotate_limit),
            hflip=coins[:, 1] < cfg.hflip_p,
            vflip=coins[:, 2] < cfg.vflip_p,
            jitter=coins[:, 3] < cfg.color_jitter_p,
            brightness=uniform(1, *BRIGHTNESS_RANGE),
            contrast=uniform(2, *CONTRAST_RANGE),
            saturation=uniform(3, *SATURATION_RANGE),
            hue=uniform(4, *HUE_RANGE),
            # argsort of i.i.d. uniforms is a uniformly random permutation per row.
            order=torch.rand(batch_size, 4, generator=generator, device=device).argsort(dim=1),
        )

    def __call__(
        self, images: Tensor, masks: Tensor, cams: Tensor | None, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Samples parameters for the batch and applies them."""
        return self.apply(images, masks, cams, self.sample_params(images.shape[0], generator))

    def apply(
        self, images: Tensor, masks: Tensor, cams: Tensor | None, params: AugmentParams
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Applies known parameters; the inputs are not modified.

        Args:
            images: (B, 3, H, W) RGB on the 0–255 scale, uint8 or floating.
            masks: (B, 1, H, W) or (B, H, W), values {0, 1}.
            cams: optional (B, 1, H, W) or (B, H, W) CAMs; they follow the geometry of the image
                with nearest-neighbour sampling and are not colour-jittered.
            params: per-sample parameters, on the batch's device.

        Returns:
            The normalised float32 image (B, 3, H, W), the float32 mask (B, 1, H, W) and the
            float32 CAM (B, 1, H, W) or None.
        """
        rows = _RowSelector(
            self.row_selection == "index"
            or (self.row_selection == "auto" and images.device.type == "cpu")
        )
        geometric = [images, _as_nchw(masks)] + ([] if cams is None else [_as_nchw(cams)])
        # Flips first, on the stored dtypes (exact, and cheapest before the float conversion).
        # The pipeline rotates first; flipping first and rotating by the mirrored angle is the same
        # map, since a mirror F turns R(θ) into R(-θ) (F R(θ) = R(-θ) F) and both flips fix the
        # rotation centre. Two flips make a half turn, which commutes with R(θ).
        h, v = params.hflip, params.vflip
        geometric = rows.writable(*geometric)
        for select, dims in ((h & ~v, (-1,)), (v & ~h, (-2,)), (h & v, (-2, -1))):
            geometric = rows.apply(select, _flipper(dims), *geometric, inplace=True)
        angle = torch.where(h ^ v, -params.angle, params.angle)

        # Fresh float32 copies: everything below works in place without touching the inputs.
        image, *labels = (t.to(torch.float32, copy=True) for t in geometric)

        def rotate(image: Tensor, *labels: Tensor, take: _Take) -> tuple[Tensor, ...]:
            grid = _rotation_grid(take(angle), image.shape)
            # Mask and CAM take the nearest pixel (albumentations' mask_interpolation=0).
            return _sample(image, grid, "bilinear"), *(_sample(t, grid, "nearest") for t in labels)

        def jitter(image: Tensor, take: _Take) -> tuple[Tensor]:
            # The index path hands over gathered copies, which jitter may overwrite.
            if not rows.by_index:
                image = image.clone()
            return (_color_jitter_(image, params, take, skip_idle_steps=rows.by_index),)

        image, *labels = rows.apply(params.rotate, rotate, image, *labels, inplace=True)
        (image,) = rows.apply(params.jitter, jitter, image, inplace=True)
        return _normalize_(image), labels[0], labels[1] if cams is not None else None


def normalize(images: Tensor) -> Tensor:
    """ImageNet normalisation of (B, 3, H, W) RGB on the 0–255 scale: the evaluation transform."""
    return _normalize_(images.to(torch.float32, copy=True))


_Take = Callable[[Tensor], Tensor]
_RowFn = Callable[..., tuple[Tensor, ...]]


@dataclass(frozen=True)
class _RowSelector:
    """Applies a transform to the selected samples of a batch (see BatchAugment.row_selection)."""

    by_index: bool

    def writable(self, *xs: Tensor) -> tuple[Tensor, ...]:
        """Copies the index path may write into (the where path never writes into its inputs)."""
        return tuple(x.clone() for x in xs) if self.by_index else xs

    def apply(
        self, select: Tensor, fn: _RowFn, *xs: Tensor, inplace: bool = False
    ) -> tuple[Tensor, ...]:
        """``fn`` on the rows of ``xs`` where ``select`` holds; the other rows pass unchanged.

        ``fn(*rows, take=take)`` gets the rows to transform and ``take``, which picks the same rows
        of a per-sample parameter. ``inplace`` lets the index path write into ``xs``; the where
        path always returns new tensors.
        """
        if not self.by_index:
            outs = fn(*xs, take=lambda t: t)
            keep = select.view(-1, 1, 1, 1)
            return tuple(torch.where(keep, out, x) for x, out in zip(xs, outs))
        picked = select.nonzero().squeeze(1)
        if picked.numel() == 0:
            return xs
        outs = fn(*(x.index_select(0, picked) for x in xs), take=lambda t: t[picked])
        targets = xs if inplace else tuple(x.clone() for x in xs)
        # Row copies, not index_copy_: on CPU that is an element-wise kernel, ~10x slower.
        for k, row in enumerate(picked.tolist()):
            for target, out in zip(targets, outs):
                target[row].copy_(out[k])
        return targets


def _flipper(dims: tuple[int, ...]) -> _RowFn:
    return lambda *xs, take: tuple(x.flip(dims) for x in xs)


@functools.cache
def _constants(device: torch.device) -> dict[str, Tensor]:
    """Per-channel constants, made once per device: building a tensor from Python numbers on a GPU
    is a blocking host-to-device copy, which would stall every batch."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * _MAX
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * _MAX
    sextants = torch.tensor([5.0, 3.0, 1.0]).view(1, 3, 1, 1)  # see _shift_hue
    return {k: v.to(device) for k, v in (("mean", mean), ("inv_std", 1 / std), ("n", sextants))}


def _normalize_(image: Tensor) -> Tensor:
    """Normalises a float image on the 0–255 scale in place (albumentations' max_pixel_value)."""
    const = _constants(image.device)
    return image.sub_(const["mean"]).mul_(const["inv_std"])


def _as_nchw(x: Tensor) -> Tensor:
    return x.unsqueeze(1) if x.dim() == 3 else x


def _rotation_grid(angle_deg: Tensor, shape: torch.Size) -> Tensor:
    """Sampling grid of a rotation about the image centre (OpenCV's centre: (W-1)/2, (H-1)/2).

    OpenCV rotates the destination by R(θ) = [[cos, sin], [-sin, cos]] in pixel coordinates (y
    down); sampling needs the inverse map R(-θ) from each output pixel back to the source. In
    grid_sample's normalised coordinates (align_corners=False: pixel centres at (2i + 1) / n - 1,
    the image centre at 0) a non-square image rescales the off-diagonal terms by its aspect ratio.
    Built by broadcasting rather than F.affine_grid, which is several times slower on CPU.
    """
    b, _, h, w = shape
    rad = angle_deg.float() * (math.pi / 180.0)
    cos, sin = torch.cos(rad).view(-1, 1, 1), torch.sin(rad).view(-1, 1, 1)
    u = ((torch.arange(w, device=rad.device) * 2 + 1) / w - 1).view(1, 1, w)
    v = ((torch.arange(h, device=rad.device) * 2 + 1) / h - 1).view(1, h, 1)
    grid = torch.empty((b, h, w, 2), device=rad.device)
    # Sums of (B, 1, W) and (B, H, 1) terms, written straight into the interleaved grid.
    torch.add(cos * u, (-sin * (h / w)) * v, out=grid[..., 0])
    torch.add((sin * (w / h)) * u, cos * v, out=grid[..., 1])
    return grid


def _sample(x: Tensor, grid: Tensor, mode: str) -> Tensor:
    # Zero padding = albumentations' border_mode=BORDER_CONSTANT with fill 0 / fill_mask 0.
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


# The colour operations work in place where they can: fresh image-sized tensors cost page faults,
# and on CPU those dominate these element-wise kernels.


def _color_jitter_(
    image: Tensor, params: AugmentParams, take: _Take, *, skip_idle_steps: bool
) -> Tensor:
    """ColorJitter with per-sample factors and per-sample operation order; may overwrite ``image``.

    Brightness, contrast and saturation are each ``x * a + c + s * gray(x)`` with per-sample
    coefficients (then clipped, as albumentations saturates after every step), so one step covers
    whichever of them each sample applies at that position. Hue, the expensive operation, runs
    once: each sample's order is split into its linear steps before its hue step and those after.
    ``skip_idle_steps`` skips work no sample needs (reads the coefficients on the host: CPU only).
    """
    order = take(params.order)  # (B, 4)
    factors = torch.stack([take(params.brightness), take(params.contrast), take(params.saturation)])
    factor = factors.T.gather(1, order.clamp(max=SATURATION))  # (B, 4): each position's factor
    hue_at = (order == HUE).int().argmax(dim=1, keepdim=True)
    position = torch.arange(4, device=order.device)
    phases = []
    for active in (position < hue_at, position > hue_at):  # linear steps before / after hue
        contrast, saturate = active & (order == CONTRAST), active & (order == SATURATION)
        phases.append(
            (
                torch.where(active, factor, 1.0),  # scale
                torch.where(contrast, 1.0 - factor, 0.0),  # weight of the mean grey level
                torch.where(saturate, 1.0 - factor, 0.0),  # weight of the grey image
                torch.stack([active, contrast, saturate]).any(dim=1),  # (3, 4): what is used
            )
        )
    # Where-mode computes every term; index mode reads once which ones some sample uses.
    used = [u.tolist() if skip_idle_steps else [[True] * 4] * 3 for *_, u in phases]
    # A linear step precedes hue only at positions 0..2 and follows it only at 1..3.
    for phase, steps in enumerate((range(3), range(1, 4))):
        if phase == 1:
            image = _shift_hue(image, take(params.hue))
        scale, contrast_w, mix, _ = phases[phase]
        any_step, any_contrast, any_saturation = used[phase]
        for step in steps:
            if any_step[step]:
                _linear_step_(
                    image,
                    scale[:, step],
                    contrast_w[:, step] if any_contrast[step] else None,
                    mix[:, step] if any_saturation[step] else None,
                )
    return image


def _linear_step_(
    image: Tensor, scale: Tensor, contrast_w: Tensor | None, mix: Tensor | None
) -> None:
    """``image = clip(image * scale + contrast_w * mean(gray) + mix * gray)``, in place."""
    # Both grey terms are of the image before this step.
    gray = None if mix is None else _gray(image)
    offset = None
    if contrast_w is not None:
        # The mean grey level is the luma of the channel means: no grey image needed.
        r, g, b = image.mean(dim=(2, 3)).unbind(dim=1)
        mean_gray = r * _GRAY_WEIGHTS[0] + g * _GRAY_WEIGHTS[1] + b * _GRAY_WEIGHTS[2]
        offset = (contrast_w * mean_gray).view(-1, 1, 1, 1)
    image.mul_(scale.view(-1, 1, 1, 1))
    if offset is not None:
        image.add_(offset)
    if gray is not None:
        image.addcmul_(mix.view(-1, 1, 1, 1), gray)
    image.clamp_(0.0, _MAX)


def _gray(image: Tensor) -> Tensor:
    r, g, b = image.unbind(dim=1)
    gray = r * _GRAY_WEIGHTS[0]
    return gray.add_(g, alpha=_GRAY_WEIGHTS[1]).add_(b, alpha=_GRAY_WEIGHTS[2]).unsqueeze(1)


def _shift_hue(image: Tensor, shift: Tensor) -> Tensor:
    """Rotates the HSV hue by ``shift`` turns; value and saturation are unchanged.

    Hue is computed in sextants and the RGB image rebuilt with the closed form
    ``channel_n = V - C * clamp(2 - |k - 2|, 0, 1)``, ``k = (n + h) mod 6`` for n = 5, 3, 1.
    Branches are arithmetic with 0/1 float indicators: on CPU, image-sized boolean tensors and
    torch.where are several times slower than float arithmetic.
    """
    r, g, b = image.unbind(dim=1)
    value = image.amax(dim=1)
    chroma = image.amin(dim=1).neg_().add_(value)
    # value >= every channel, so sign(value - c) is 0 exactly where channel c is the maximum.
    # Ties go to red, then green, as in OpenCV.
    not_r = torch.sub(value, r).sign_()
    is_g = torch.sub(value, g).sign_().neg_().add_(1.0).mul_(not_r)
    # hue * C by the maximum channel — red: g - b, green: b - r + 2C, blue: r - g + 4C — folded
    # into (g - b) + not_r * (blue - red) + is_g * (green - blue).
    hue = torch.sub(g, b)
    hue.addcmul_(not_r, (r + b).sub_(g, alpha=2.0).add_(chroma, alpha=4.0))
    hue.addcmul_(is_g, (g + b).sub_(r, alpha=2.0).sub_(chroma, alpha=2.0))
    hue.div_(chroma.clamp_min(1e-6))  # grey pixels: any hue, C = 0 drops it below
    hue.add_(6.0 * shift.view(-1, 1, 1))
    k = hue.unsqueeze(1) + _constants(image.device)["n"]
    # k mod 6 by floor (remainder is slow on CPU); the ramp is continuous and 6-periodic, so the
    # rounding of k / 6 near a multiple of 6 cannot change the result.
    k.sub_(torch.mul(k, 1.0 / 6.0).floor_().mul_(6.0))
    ramp = k.sub_(2.0).abs_().neg_().add_(2.0).clamp_(0.0, 1.0)  # min(k, 4 - k), clipped
    return ramp.mul_(chroma.unsqueeze(1)).neg_().add_(value.unsqueeze(1))
