"""Batched, device-resident version of the training augmentations in ``augment.py``.

Same transforms, order and probabilities as the albumentations pipeline — rotation, horizontal
flip, vertical flip, colour jitter, normalisation (or, with ``normalise: first``, normalisation
first) — but applied to whole ``(B, C, H, W)`` batches with tensor ops (grid_sample for the
rotation), so they run where the batch lives. Every random choice is a per-sample tensor. On a
GPU, samples are selected with ``torch.where`` and nothing waits for the host; on CPU only the
drawn samples are computed (see ``BatchAugment``).

Randomness is split from computation: :meth:`BatchAugment.sample_params` draws an
:class:`AugmentParams` from a ``torch.Generator`` and :meth:`BatchAugment.apply` applies given
parameters, so known parameters can be checked against albumentations.

Differences from albumentations on uint8 images, all below a few grey levels (measured in
``tests/test_batch_augment.py``): the image stays float32 instead of being rounded (or, for
brightness and contrast, truncated) to uint8 after every step, and OpenCV's fixed-point bilinear
weights and uint8 HSV arithmetic are replaced by float maths.

With ``normalise: first`` the transforms see the normalised float image, and the jitter follows
what albumentations 2.0.8 does to float32 images (ColorJitter's functions, albucore's ``clip``):
every brightness, contrast and saturation step is clipped to [0, 1] — float32's "max value" —
which on a normalised image (about -2.1…2.6) cuts off everything below the ImageNet mean and
above 1; brightness and contrast skip the step, clip included, at factor 1 (contrast also at 0),
saturation clips even then. Hue goes through OpenCV's float HSV, unclipped. albumentations 1.3
(the released code's) clips the same three steps to [0, 1] too; it only skips saturation's clip
at factor 1, which a drawn factor never is.
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

# albumentations 2.0.8 ColorJitter defaults (the pipeline in augment.py keeps the first three;
# the hue range is [-cfg.hue, cfg.hue], this one at the default cfg.hue).
BRIGHTNESS_RANGE = (0.8, 1.2)
CONTRAST_RANGE = (0.8, 1.2)
SATURATION_RANGE = (0.8, 1.2)
HUE_RANGE = (-0.5, 0.5)

# Colour-jitter operations, numbered as albumentations' ColorJitter.transforms list.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3

# How a transform that applies to some samples of a batch reaches them (see BatchAugment).
ROW_SELECTION = ("auto", "index", "where")

_MAX = 255.0  # images are processed on the 0–255 scale, like albumentations' uint8 pipeline
_FLOAT_MAX = 1.0  # albumentations' max value of float32: the jitter's clip with normalise first
_FLT_EPSILON = 1.1920929e-07  # C's FLT_EPSILON, in OpenCV's float RGB→HSV (see _shift_hue)
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
        cfg: probabilities, rotation limit and border, hue range and where normalisation happens
            (the object the albumentations pipeline takes).
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
            hue=uniform(4, -cfg.hue, cfg.hue),
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
            images: (B, 3, H, W) RGB on the 0–255 scale, uint8 or floating (not normalised, in
                either ``normalise`` order).
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
        first = self.cfg.normalise == "first"
        if first:
            # Normalising per channel commutes with the flips already done: the same image as
            # the released code's Normalize-then-flip.
            _normalize_(image)
        reflect = self.cfg.rotate_border == "reflect"

        def rotate(image: Tensor, *labels: Tensor, take: _Take) -> tuple[Tensor, ...]:
            grid = _rotation_grid(take(angle), image.shape, align_corners=reflect)
            # Mask and CAM take the nearest pixel (albumentations' mask_interpolation=0).
            return _sample(image, grid, "bilinear", reflect), *(
                _sample(t, grid, "nearest", reflect) for t in labels
            )

        def jitter(image: Tensor, take: _Take) -> tuple[Tensor]:
            # The index path hands over gathered copies, which jitter may overwrite.
            if not rows.by_index:
                image = image.clone()
            return (
                _color_jitter_(
                    image, params, take, skip_idle_steps=rows.by_index, float_image=first
                ),
            )

        image, *labels = rows.apply(params.rotate, rotate, image, *labels, inplace=True)
        (image,) = rows.apply(params.jitter, jitter, image, inplace=True)
        if not first:
            _normalize_(image)
        return image, labels[0], labels[1] if cams is not None else None


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


def _rotation_grid(angle_deg: Tensor, shape: torch.Size, *, align_corners: bool) -> Tensor:
    """Sampling grid of a rotation about the image centre (OpenCV's centre: (W-1)/2, (H-1)/2).

    OpenCV rotates the destination by R(θ) = [[cos, sin], [-sin, cos]] in pixel coordinates (y
    down); sampling needs the inverse map R(-θ) from each output pixel back to the source. In
    grid_sample's normalised coordinates (align_corners=False: pixel centres at (2i + 1) / n - 1,
    the image centre at 0) a non-square image rescales the off-diagonal terms by its aspect ratio.
    ``align_corners=True`` (pixel centres at 2i / (n - 1) - 1) is the same map scaled by
    n / (n - 1) per axis. Built by broadcasting rather than F.affine_grid, which is several times
    slower on CPU.
    """
    b, _, h, w = shape
    rad = angle_deg.float() * (math.pi / 180.0)
    cos, sin = torch.cos(rad).view(-1, 1, 1), torch.sin(rad).view(-1, 1, 1)
    u = ((torch.arange(w, device=rad.device) * 2 + 1) / w - 1).view(1, 1, w)
    v = ((torch.arange(h, device=rad.device) * 2 + 1) / h - 1).view(1, h, 1)
    sx, sy = (w / max(w - 1, 1), h / max(h - 1, 1)) if align_corners else (1.0, 1.0)
    grid = torch.empty((b, h, w, 2), device=rad.device)
    # Sums of (B, 1, W) and (B, H, 1) terms, written straight into the interleaved grid.
    torch.add((cos * sx) * u, (-sin * (sx * h / w)) * v, out=grid[..., 0])
    torch.add((sin * (sy * w / h)) * u, (cos * sy) * v, out=grid[..., 1])
    return grid


def _sample(x: Tensor, grid: Tensor, mode: str, reflect: bool) -> Tensor:
    if not reflect:
        # Zero padding = albumentations' border_mode=BORDER_CONSTANT with fill 0 / fill_mask 0.
        return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)
    # BORDER_REFLECT_101 mirrors about the edge pixels' centres (dcb|abcd|cba): grid_sample's
    # reflection does so with align_corners=True (with False it mirrors about the pixel edges,
    # BORDER_REFLECT). Mirroring the position before interpolating equals OpenCV's mirroring of
    # the taps: linear and nearest weights are symmetric about the mirror.
    return F.grid_sample(x, grid, mode=mode, padding_mode="reflection", align_corners=True)


# The colour operations work in place where they can: fresh image-sized tensors cost page faults,
# and on CPU those dominate these element-wise kernels.


def _color_jitter_(
    image: Tensor,
    params: AugmentParams,
    take: _Take,
    *,
    skip_idle_steps: bool,
    float_image: bool = False,
) -> Tensor:
    """ColorJitter with per-sample factors and per-sample operation order; may overwrite ``image``.

    Brightness, contrast and saturation are each ``x * a + c + s * gray(x)`` with per-sample
    coefficients (then clipped, as albumentations saturates after every step), so one step covers
    whichever of them each sample applies at that position. Hue, the expensive operation, runs
    once: each sample's order is split into its linear steps before its hue step and those after.
    ``skip_idle_steps`` skips work no sample needs (reads the coefficients on the host: CPU only).
    ``float_image``: the image is normalised, not on the 0–255 scale; albumentations' float32
    rules apply (see the module docstring, :func:`_float_clip_bounds` and :func:`_shift_hue`).
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
                # Idle positions must not clip a normalised image: per-sample bounds there.
                _float_clip_bounds(active, order, factor) if float_image else (0.0, _MAX),
            )
        )
    # Where-mode computes every term; index mode reads once which ones some sample uses.
    used = [u.tolist() if skip_idle_steps else [[True] * 4] * 3 for *_, u, _ in phases]
    # A linear step precedes hue only at positions 0..2 and follows it only at 1..3.
    for phase, steps in enumerate((range(3), range(1, 4))):
        if phase == 1:
            image = _shift_hue(image, take(params.hue), opencv_float=float_image)
        scale, contrast_w, mix, _, bounds = phases[phase]
        any_step, any_contrast, any_saturation = used[phase]
        for step in steps:
            if any_step[step]:
                _linear_step_(
                    image,
                    scale[:, step],
                    contrast_w[:, step] if any_contrast[step] else None,
                    mix[:, step] if any_saturation[step] else None,
                    bounds if not float_image else (bounds[0][:, step], bounds[1][:, step]),
                )
    return image


def _float_clip_bounds(active: Tensor, order: Tensor, factor: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample (low, high) clip of each jitter position, (B, 4) each, for a float32 image.

    albumentations 2.0.8 returns the image untouched, unclipped, for brightness or contrast at
    factor 1 and for contrast at factor 0 (a constant image of the mean grey level); everything
    else, saturation always, is clipped to [0, 1]. Idle positions and skipped steps get ±inf.
    """
    skipped = ((order != SATURATION) & (factor == 1.0)) | ((order == CONTRAST) & (factor == 0.0))
    clips = active & ~skipped
    inf = float("inf")
    return torch.where(clips, 0.0, -inf), torch.where(clips, _FLOAT_MAX, inf)


def _linear_step_(
    image: Tensor,
    scale: Tensor,
    contrast_w: Tensor | None,
    mix: Tensor | None,
    bounds: tuple[float, float] | tuple[Tensor, Tensor],
) -> None:
    """``image = clip(image * scale + contrast_w * mean(gray) + mix * gray)``, in place.

    ``bounds`` is the clip range: two numbers for the whole batch or two (B,) tensors.
    """
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
    low, high = bounds
    if isinstance(low, Tensor):
        image.clamp_(low.view(-1, 1, 1, 1), high.view(-1, 1, 1, 1))
    else:
        image.clamp_(low, high)


def _gray(image: Tensor) -> Tensor:
    r, g, b = image.unbind(dim=1)
    gray = r * _GRAY_WEIGHTS[0]
    return gray.add_(g, alpha=_GRAY_WEIGHTS[1]).add_(b, alpha=_GRAY_WEIGHTS[2]).unsqueeze(1)


def _shift_hue(image: Tensor, shift: Tensor, *, opencv_float: bool = False) -> Tensor:
    """Rotates the HSV hue by ``shift`` turns; value and saturation are unchanged.

    Hue is computed in sextants and the RGB image rebuilt with the closed form
    ``channel_n = V - C * clamp(2 - |k - 2|, 0, 1)``, ``k = (n + h) mod 6`` for n = 5, 3, 1.
    Branches are arithmetic with 0/1 float indicators: on CPU, image-sized boolean tensors and
    torch.where are several times slower than float arithmetic.

    ``opencv_float``: what OpenCV's float RGB→HSV→RGB does to values outside [0, 1] (normalised
    images). It stores S = C / (|V| + FLT_EPSILON) and rebuilds with V·S, so where V ≤ 0 the
    chroma flips sign and the round trip does not restore the pixel; samples with shift 0 keep
    their pixels (up to rounding), as albumentations skips the conversion for them.
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
    if opencv_float:
        signed = value / (value.abs() + _FLT_EPSILON)
        chroma.mul_(torch.where(shift.view(-1, 1, 1) == 0, 1.0, signed))
    k = hue.unsqueeze(1) + _constants(image.device)["n"]
    # k mod 6 by floor (remainder is slow on CPU); the ramp is continuous and 6-periodic, so the
    # rounding of k / 6 near a multiple of 6 cannot change the result.
    k.sub_(torch.mul(k, 1.0 / 6.0).floor_().mul_(6.0))
    ramp = k.sub_(2.0).abs_().neg_().add_(2.0).clamp_(0.0, 1.0)  # min(k, 4 - k), clipped
    return ramp.mul_(chroma.unsqueeze(1)).neg_().add_(value.unsqueeze(1))
