"""The centre classifier: a ResNet that predicts an image's centre from its Sobel edges.

The Sobel filter lives inside the model so that training and GradCAM see the same path and
callers always pass the normalised RGB image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision import models as tvm

from trainables.cam import FcCAM, GradCAM
from trainables.config import CAM_ATTRIBUTIONS, CAM_INPUTS, CAM_LAYERS
from trainables.models.registry import CLASSIFIER_ARCHS
from trainables.models.weights import is_weights_path, load_weights_file

IMAGENET_STD = (0.229, 0.224, 0.225)
# ITU-R BT.601 luma, as in OpenCV's RGB -> gray.
LUMA = (0.299, 0.587, 0.114)


def _torchvision_resnet(arch: str) -> tuple[Callable[..., tvm.ResNet], type[tvm.WeightsEnum]]:
    """The torchvision constructor of ``resnetNN`` and its ImageNet weights enum."""
    return getattr(tvm, arch), getattr(tvm, f"ResNet{arch.removeprefix('resnet')}_Weights")


class SobelMagnitude(nn.Module):
    """Normalised RGB image -> Sobel gradient magnitude of its luma, replicated to 3 channels.

    The luma is that of the [0, 1] RGB image the input was normalised from; only `std` is needed
    because the normalisation's mean is a constant offset, which Sobel kernels cancel. The
    magnitude is divided by its bound on a [0, 1] image (4 * sqrt(2)), so outputs lie in [0, 1].

    Args:
        std: Per-channel standard deviation used to normalise the input.
    """

    def __init__(self, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        weight = torch.tensor(LUMA) * torch.tensor(std, dtype=torch.float32)
        self.register_buffer("gray_weight", weight.view(1, 3, 1, 1))
        gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        self.register_buffer("kernels", torch.stack([gx, gx.T]).unsqueeze(1))
        self.scale = 1.0 / (4.0 * math.sqrt(2.0))

    def forward(self, x: Tensor) -> Tensor:
        # fp32 even under bf16 autocast: bf16 would round the grey image to ~half a grey level,
        # so training (autocast) and the cached CAMs (fp32) would see different edge images.
        with torch.autocast(x.device.type, enabled=False):
            gray = (x.float() * self.gray_weight).sum(dim=1, keepdim=True)
            # Replicate padding: zero padding would invent edges along the image border.
            grad = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), self.kernels)
            # The epsilon keeps the square root differentiable where the gradient vanishes.
            magnitude = torch.sqrt(grad.pow(2).sum(dim=1, keepdim=True) + 1e-12) * self.scale
        return magnitude.expand(-1, 3, -1, -1)


class CentreClassifier(nn.Module):
    """`SobelMagnitude` followed by a torchvision ResNet with a `num_classes` head.

    Args:
        backbone: A torchvision ResNet whose `fc` already has the right number of outputs.
    """

    def __init__(self, backbone: tvm.ResNet) -> None:
        super().__init__()
        self.sobel = SobelMagnitude()
        self.backbone = backbone

    @property
    def target_layer(self) -> nn.Module:
        """The GradCAM target: the backbone's last convolutional stage (`layer4`)."""
        return self.backbone.layer4

    @property
    def num_classes(self) -> int:
        """Number of centres the head classifies."""
        return self.backbone.fc.out_features

    def explainer(
        self, attribution: str = "gradcam", cam_input: str = "sobel", layer: str = "layer4"
    ) -> GradCAM:
        """The class activation maps of this classifier, as a context manager (see GradCAM).

        Args:
            attribution: ``gradcam`` (the paper) or ``cam`` (fc-weight CAM, the authors'
                released code).
            cam_input: ``sobel`` — the Sobel image the classifier is trained on (the paper) —
                or ``rgb``: the normalised RGB image fed straight to the ResNet, as the released
                code does (its Sobel step is commented out at CAM time).
            layer: the ResNet stage explained (``CAM_LAYERS``); ``cam`` needs ``layer4``.
        """
        if (
            attribution not in CAM_ATTRIBUTIONS
            or cam_input not in CAM_INPUTS
            or layer not in CAM_LAYERS
            or (attribution == "cam" and layer != "layer4")
        ):
            raise ValueError(
                f"unknown CAM {attribution!r} at {layer!r} on {cam_input!r}; valid: attribution "
                f"{', '.join(CAM_ATTRIBUTIONS)} (cam at layer4 only), layer "
                f"{', '.join(CAM_LAYERS)}, input {', '.join(CAM_INPUTS)}"
            )
        model = self if cam_input == "sobel" else self.backbone
        if attribution == "gradcam":
            return GradCAM(model, getattr(self.backbone, layer))
        return FcCAM(model, self.target_layer, self.backbone.fc)

    def forward(self, x: Tensor) -> Tensor:
        """Maps (B, 3, H, W) normalised images to (B, num_classes) centre logits."""
        return self.backbone(self.sobel(x))


def build_centre_classifier(
    num_classes: int, *, arch: str = "resnet50", weights: str | Path | None = None
) -> CentreClassifier:
    """Builds the centre classifier.

    Args:
        num_classes: Number of training centres (at least 2).
        arch: One of `CLASSIFIER_ARCHS` (paper: resnet50).
        weights: None (random init), ``"imagenet"`` (torchvision's default weights, downloaded
            where the network allows) or a local state-dict file of the backbone; its ``fc.*``
            keys, if any, are ignored because the head is new.

    Raises:
        ValueError: Unknown arch or weights setting, fewer than 2 classes, or a weights file
            that does not fit the backbone.
        FileNotFoundError: A local weights file does not exist.
    """
    if arch not in CLASSIFIER_ARCHS:
        raise ValueError(f"unknown classifier arch {arch!r}; valid: {', '.join(CLASSIFIER_ARCHS)}")
    if num_classes < 2:
        raise ValueError(f"a centre classifier needs at least 2 classes, got {num_classes}")
    factory, weights_enum = _torchvision_resnet(arch)
    local = weights is not None and is_weights_path(weights)
    if weights is None or local:
        backbone = factory(weights=None)
    elif weights == "imagenet":
        backbone = factory(weights=weights_enum.DEFAULT)
    else:
        raise ValueError(
            f"unknown classifier weights {weights!r}; valid: None, 'imagenet' or a path to a "
            ".pth/.pt state-dict file"
        )
    if local:
        load_weights_file(backbone, weights, what=f"{arch} backbone", ignore_prefixes=("fc.",))
    backbone.fc = nn.Linear(backbone.fc.in_features, num_classes)
    return CentreClassifier(backbone)
