"""Segmentation models (UNet, DeepLabV3+, SDNet) and the centre classifier.

Names (``MODEL_NAMES``, ``VARIANTS``, ``CLASSIFIER_ARCHS``) come from the torch-free
:mod:`trainables.models.registry`; everything else is imported on first use (PEP 562), so that
validating a config or reading a run does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from trainables.models.registry import CLASSIFIER_ARCHS, MODEL_NAMES, VARIANTS, build_model

_LAZY = {
    "MASKING_TARGETS": "trainables.models.base",
    "SegmentationNet": "trainables.models.base",
    "match_masking": "trainables.models.base",
    "CentreClassifier": "trainables.models.centre_classifier",
    "SobelMagnitude": "trainables.models.centre_classifier",
    "build_centre_classifier": "trainables.models.centre_classifier",
    "SDNet": "trainables.models.sdnet",
    "SmpSegmentationNet": "trainables.models.smp_models",
    "load_weights_file": "trainables.models.weights",
}

__all__ = ["CLASSIFIER_ARCHS", "MODEL_NAMES", "VARIANTS", "build_model", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
