"""Segmentation models (UNet, DeepLabV3+, SDNet) and the centre classifier."""

from __future__ import annotations

from trainables.models.base import OCCLUSION_TARGETS, SegmentationNet, match_occlusion
from trainables.models.centre_classifier import (
    CLASSIFIER_ARCHS,
    CentreClassifier,
    SobelMagnitude,
    build_centre_classifier,
)
from trainables.models.registry import MODEL_NAMES, MODEL_REGISTRY, VARIANTS, build_model
from trainables.models.sdnet import SDNet
from trainables.models.smp_models import SmpSegmentationNet
from trainables.models.weights import load_weights_file

__all__ = [
    "CLASSIFIER_ARCHS",
    "MODEL_NAMES",
    "MODEL_REGISTRY",
    "OCCLUSION_TARGETS",
    "VARIANTS",
    "CentreClassifier",
    "SDNet",
    "SegmentationNet",
    "SmpSegmentationNet",
    "SobelMagnitude",
    "build_centre_classifier",
    "build_model",
    "load_weights_file",
    "match_occlusion",
]
