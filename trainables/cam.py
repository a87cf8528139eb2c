"""Batched, device-resident GradCAM, CAM binarisation and the masking augmentation.

GradCAM follows Algorithm 1 of Corbetta et al. (MLMI 2023) and reproduces the ``grad-cam``
package (``pytorch_grad_cam.GradCAM``) within 1e-4, but runs the whole batch on the model's
device with one forward and one backward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables.config import MASK_DRAWS, MASK_MODE_NAMES

# The grad-cam package divides by (range + 1e-7); using the same epsilon keeps near-constant maps
# (pure float noise) close to zero, as the reference does, instead of stretching noise to [0, 1].
_NORM_EPS = 1e-7

CACHE_DTYPES = (torch.float16, torch.float32)


class GradCAM:
    """GradCAM of a classifier at one layer, as a context manager.

    The forward hook on ``target_layer`` exists only inside the ``with`` block and only acts
    during :meth:`__call__`, so the model can be used normally otherwise. The model's train/eval
    mode is never changed: call ``model.eval()`` first if it has batch-coupled layers
    (BatchNorm in train mode mixes the images of a batch).

    Example:
        >>> with GradCAM(classifier, classifier.layer4) as cam:
        ...     maps = cam(images)  # (B, 1, H, W) in [0, 1]

    Attributes:
        last_logits: Detached logits (B, num_classes) of the latest call, or None.
        last_target: Classes (B,) whose score the latest call explained, or None.
    """

    def __init__(self, model: nn.Module, target_layer: nn.Module) -> None:
        self.model = model
        self.target_layer = target_layer
        self.last_logits: Tensor | None = None
        self.last_target: Tensor | None = None
        self._handle: torch.utils.hooks.RemovableHandle | None = None
        self._capturing = False
        self._activation: Tensor | None = None

    def __enter__(self) -> GradCAM:
        if self._handle is not None:
            raise RuntimeError("GradCAM context is already active")
        self._handle = self.target_layer.register_forward_hook(self._hook)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._activation = None

    def _hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor | None:
        if not self._capturing:
            return None
        if not isinstance(output, Tensor):
            raise TypeError(
                f"GradCAM target layer must output a Tensor, got {type(output).__name__}"
            )
        # A fresh leaf makes the gradient available even with frozen parameters or under
        # no_grad, and stops the backward pass at this layer (nothing upstream is needed).
        # The clone lets later in-place ops (e.g. ReLU(inplace=True)) run on a non-leaf.
        leaf = output.detach().requires_grad_(True)
        self._activation = leaf
        return leaf.clone()

    def __call__(self, x: Tensor, target: Tensor | None = None) -> Tensor:
        """Compute the class activation maps of a batch.

        Args:
            x: Input batch (B, C, H, W) on the model's device.
            target: Optional (B,) integer classes to explain; default: the predicted class
                (argmax of the logits).

        Returns:
            (B, 1, H, W) float32 maps on ``x.device``, each min-max normalised to [0, 1];
            a constant map (e.g. all activations negative after ReLU) becomes all zeros.
        """
        if self._handle is None:
            raise RuntimeError("use GradCAM inside a `with GradCAM(model, layer) as cam:` block")
        if x.ndim != 4:
            raise ValueError(f"expected an input of shape (B, C, H, W), got {tuple(x.shape)}")
        self._capturing = True
        try:
            with torch.enable_grad():
                logits = self.model(x)
                activation = self._activation
                if activation is None:
                    raise RuntimeError("the target layer was not called in the model's forward")
                if not isinstance(logits, Tensor) or logits.ndim != 2:
                    raise ValueError("GradCAM needs a model returning logits of shape (B, classes)")
                if target is None:
                    target = logits.detach().argmax(dim=1)
                else:
                    target = torch.as_tensor(target, device=logits.device).long().reshape(-1)
                    if target.shape[0] != logits.shape[0]:
                        raise ValueError(
                            f"target has {target.shape[0]} entries for a batch of {logits.shape[0]}"
                        )
                weights = self._channel_weights(logits, target, activation)
        finally:
            self._capturing = False
            self._activation = None

        self.last_logits = logits.detach()
        self.last_target = target
        # Autocast may have produced bf16/fp16 activations; the map itself is built in fp32.
        activation = activation.detach().float()
        cam = (weights * activation).sum(dim=1, keepdim=True)
        if self.rectify:
            cam = F.relu(cam)
        # Order: ReLU -> upsample -> min-max. grad-cam normalises the low-resolution map, resizes
        # it with cv2 (INTER_LINEAR: half-pixel centres, no antialiasing, i.e. torch's
        # align_corners=False) and then normalises again. Min-max normalisation is invariant to
        # the positive affine first step, so its result is the min-max of the upsampled map.
        # Normalising only before upsampling would differ: interpolated peaks fall below 1.
        cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return _minmax(cam).to(x.device)

    rectify = True  # GradCAM keeps only evidence *for* the class (ReLU)

    def _channel_weights(self, logits: Tensor, target: Tensor, activation: Tensor) -> Tensor:
        """(B, C, 1, 1) weights: the target score's gradient, averaged over positions."""
        # Summing the selected scores gives every image its own gradient in one backward,
        # because images do not interact in an eval-mode classifier.
        score = logits.gather(1, target[:, None]).sum()
        (grad,) = torch.autograd.grad(score, activation)
        return grad.float().mean(dim=(2, 3), keepdim=True)


class FcCAM(GradCAM):
    """The original CAM (Zhou et al. 2016), as the authors' released code uses it (MONAI's
    ``CAM`` at the last block with the classifier's fc layer): the feature maps weighted by the
    fc weights of the target class — no gradient, no ReLU — upsampled and min-max normalised.
    High values mark what the classifier relies on (MONAI's default post-processing would flip
    that; camsweep's ``masking.mode`` says what to do with it instead).

    Same interface as :class:`GradCAM`, plus the fc layer whose weights are used.
    """

    rectify = False

    def __init__(self, model: nn.Module, target_layer: nn.Module, fc: nn.Linear) -> None:
        super().__init__(model, target_layer)
        self.fc = fc

    def _channel_weights(self, logits: Tensor, target: Tensor, activation: Tensor) -> Tensor:
        # The fc bias shifts every position alike, which min-max normalisation removes.
        return self.fc.weight.detach().float()[target][:, :, None, None]


def _minmax(cam: Tensor) -> Tensor:
    flat = cam.flatten(1)
    low = flat.min(dim=1).values.view(-1, 1, 1, 1)
    high = flat.max(dim=1).values.view(-1, 1, 1, 1)
    return (cam - low) / (high - low + _NORM_EPS)


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def compute_cams(
    model: nn.Module,
    target_layer: nn.Module,
    images: Tensor,
    *,
    batch_size: int = 64,
    target: Tensor | None = None,
    dtype: torch.dtype = torch.float16,
) -> Tensor:
    """Compute GradCAMs of many images in batches, for the per-fold CAM cache.

    Batches are moved to the model's device; results are gathered on the CPU. The model's
    train/eval mode is left as it is (put it in eval mode first).

    Args:
        model: The (frozen) classifier.
        target_layer: Layer whose output is explained (``layer4`` for a ResNet).
        images: (N, C, H, W) preprocessed inputs, on any device.
        batch_size: Images per forward/backward pass.
        target: Optional (N,) classes to explain; default: each image's predicted class.
        dtype: ``torch.float16`` (default) halves the cache's memory and object-store size; its
            rounding (at most 2.5e-4 near 0.5) can only flip pixels lying that close to the
            binarisation threshold. ``torch.float32`` keeps the maps exactly.

    Returns:
        (N, 1, H, W) CPU tensor of ``dtype`` with values in [0, 1].
    """
    if dtype not in CACHE_DTYPES:
        raise ValueError(f"dtype must be one of {CACHE_DTYPES}, got {dtype}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    n, _, height, width = images.shape
    if target is not None and len(target) != n:
        raise ValueError(f"target has {len(target)} entries for {n} images")
    device = _model_device(model)
    out = torch.empty((n, 1, height, width), dtype=dtype)
    with GradCAM(model, target_layer) as cam:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            batch = images[start:stop].to(device, non_blocking=True)
            batch_target = None if target is None else target[start:stop].to(device)
            out[start:stop] = cam(batch, batch_target).to("cpu", dtype)
    return out


def binarize(cam: Tensor, threshold: float) -> Tensor:
    """Binarise CAMs: 1 where ``cam >= threshold``, else 0.

    Returns a tensor of the CAM's floating dtype (float32 for non-float input).
    """
    dtype = cam.dtype if cam.is_floating_point() else torch.float32
    return (cam >= threshold).to(dtype)


def _occlude(binary: Tensor) -> Tensor:
    return 1 - binary


def _keep(binary: Tensor) -> Tensor:
    return binary


MASK_MODES: dict[str, Callable[[Tensor], Tensor]] = dict(
    zip(MASK_MODE_NAMES, (_occlude, _keep), strict=True)
)


def masking_factor(
    cam: Tensor,
    *,
    threshold: float,
    p: float,
    mode: str = "occlude",
    draw: str = "per_sample",
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Multiplicative masking factor of the interpretability-guided augmentation.

    With ``draw="per_sample"`` (the paper: "with probability p") each sample is selected
    independently with probability ``p``; with ``"per_batch"`` (the authors' released code, one
    ``random.random() < p`` per batch) the whole batch is selected or none of it. For a selected
    sample the factor depends on ``mode``:

    - ``"occlude"`` (default, the paper's intent): ``1 - bin(cam)`` blocks out the regions the
      centre classifier relies on (the extra-anatomical content) and keeps the rest. The
      authors' released code does the same: it multiplies by a map whose direction MONAI's
      default post-processing has already flipped.
    - ``"keep"`` (an ablation): ``bin(cam)`` keeps only those regions and blacks out everything
      else.

    Unselected samples get a factor of 1 everywhere. Multiply the input image (UNet,
    DeepLabV3+) or SDNet's anatomy representation by the factor; it broadcasts over channels.

    Args:
        cam: (B, 1, H, W) CAMs in [0, 1].
        threshold: Binarisation threshold in (0, 1); pixels with ``cam >= threshold`` count as
            classifier-relevant.
        p: Per-sample selection probability in [0, 1].
        mode: A key of ``MASK_MODES``.
        generator: Optional generator on ``cam``'s device, for reproducible selection.

    Returns:
        The factor, shaped like ``cam`` with values in {0, 1}, and the (B,) bool selection.

    Raises:
        ValueError: For an unknown mode, ``p`` outside [0, 1] or ``threshold`` outside (0, 1).
    """
    if mode not in MASK_MODES:
        raise ValueError(f"unknown mask mode {mode!r}; valid modes: {sorted(MASK_MODES)}")
    if draw not in MASK_DRAWS:
        raise ValueError(f"unknown masking draw {draw!r}; valid: {', '.join(MASK_DRAWS)}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if cam.ndim != 4:
        raise ValueError(f"expected CAMs of shape (B, 1, H, W), got {tuple(cam.shape)}")
    masked = MASK_MODES[mode](binarize(cam, threshold))
    # rand() is in [0, 1), so p = 0 selects nothing and p = 1 selects everything.
    n_draws = cam.shape[0] if draw == "per_sample" else 1
    selected = torch.rand(n_draws, device=cam.device, generator=generator) < p
    selected = selected.expand(cam.shape[0])
    factor = torch.where(selected.view(-1, 1, 1, 1), masked, torch.ones_like(masked))
    return factor, selected
