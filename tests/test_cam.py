from __future__ import annotations

import copy

import pytest
import torch
from pytorch_grad_cam import GradCAM as ReferenceGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from torchvision.models import resnet18

from trainables.cam import (
    MASK_MODES,
    FcCAM,
    GradCAM,
    binarize,
    compute_cams,
    masking_factor,
)


@pytest.fixture(scope="module")
def classifier() -> nn.Module:
    torch.manual_seed(0)
    return resnet18(weights=None, num_classes=5).eval()


def _images(n: int = 3, size: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _reference(
    model: nn.Module, x: torch.Tensor, target: list[int] | None, layer: nn.Module | None = None
) -> torch.Tensor:
    targets = None if target is None else [ClassifierOutputTarget(t) for t in target]
    layer = model.layer4 if layer is None else layer
    with ReferenceGradCAM(model=model, target_layers=[layer]) as ref:
        maps = ref(input_tensor=x, targets=targets)
    for parameter in model.parameters():
        parameter.grad = None
    return torch.from_numpy(maps).unsqueeze(1)


@pytest.mark.parametrize("target", [None, [4, 0, 2]])
def test_matches_grad_cam_package(classifier: nn.Module, target: list[int] | None) -> None:
    x = _images()
    expected = _reference(classifier, x, target)
    given = None if target is None else torch.tensor(target)
    with GradCAM(classifier, classifier.layer4) as cam:
        maps = cam(x, given)
    assert maps.shape == (3, 1, 64, 64)
    assert maps.dtype == torch.float32
    torch.testing.assert_close(maps, expected, atol=1e-4, rtol=0)
    if target is None:
        assert torch.equal(cam.last_target, cam.last_logits.argmax(1))
        assert torch.equal(cam.last_logits, classifier(x).detach())


def _monai_cam(model: nn.Module, x: torch.Tensor, target, layer: str, fc: str) -> torch.Tensor:
    """MONAI's CAM — what the authors' released code calls — with the map not flipped: its
    default post-processing maps (min, max) to (1, 0); camsweep keeps high = relevant."""
    from monai.transforms import ScaleIntensity
    from monai.visualize import CAM as ReferenceCAM

    scale = ScaleIntensity(minv=0.0, maxv=1.0)
    ref = ReferenceCAM(
        nn_module=copy.deepcopy(model),  # MONAI leaves its hooks on the module it wraps
        target_layers=layer,
        fc_layers=fc,
        postprocessing=lambda maps: torch.stack([scale(m) for m in maps]),
    )
    return torch.from_numpy(ref(x, class_idx=target).detach().cpu().numpy())


@pytest.mark.parametrize("target", [None, [4, 0, 2]])
def test_fc_cam_matches_monai(classifier: nn.Module, target: list[int] | None) -> None:
    x = _images()
    expected = _monai_cam(classifier, x, target, "layer4", "fc")
    given = None if target is None else torch.tensor(target)
    with FcCAM(classifier, classifier.layer4, classifier.fc) as cam:
        maps = cam(x, given)
    torch.testing.assert_close(maps, expected.float(), atol=1e-4, rtol=0)
    # Without the ReLU it is not GradCAM (which keeps only the positive evidence).
    with GradCAM(classifier, classifier.layer4) as gradcam:
        assert (gradcam(x, given) - maps).abs().max() > 1e-2


def test_centre_classifier_cams_on_rgb_differ_from_sobel_and_match_monai() -> None:
    from trainables.models import build_centre_classifier

    torch.manual_seed(0)
    model = build_centre_classifier(5, arch="resnet18").eval()
    x = _images()
    with model.explainer("cam", "rgb") as cam:
        rgb = cam(x)
    with model.explainer("cam", "sobel") as cam:
        sobel = cam(x)
    assert (rgb - sobel).abs().max() > 0.1
    # rgb: the ResNet on the image itself, as the released code's `cam(imgs)`.
    expected = _monai_cam(model.backbone, x, None, "layer4", "fc")
    torch.testing.assert_close(rgb, expected.float(), atol=1e-4, rtol=0)
    expected = _monai_cam(model, x, None, "backbone.layer4", "backbone.fc")
    torch.testing.assert_close(sobel, expected.float(), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="valid: attribution gradcam, cam .*input sobel, rgb"):
        model.explainer("scorecam", "rgb")


def test_non_square_input_matches_reference(classifier: nn.Module) -> None:
    # A 3x5 feature map has interior cells whose peaks bilinear upsampling does not reach, so
    # here normalising only before upsampling would miss the reference by ~5e-3.
    x = torch.randn(2, 3, 96, 160, generator=torch.Generator().manual_seed(7))
    expected = _reference(classifier, x, [1, 3])
    with GradCAM(classifier, classifier.layer4) as cam:
        maps = cam(x, torch.tensor([1, 3]))
    assert maps.shape == (2, 1, 96, 160)
    torch.testing.assert_close(maps, expected, atol=1e-4, rtol=0)


def test_in_place_op_after_target_layer() -> None:
    torch.manual_seed(0)

    def build(inplace: bool) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(3, 6, 3, stride=4, padding=1),
            nn.ReLU(inplace=inplace),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(6, 3),
        )

    in_place = build(True)
    out_of_place = build(False)
    out_of_place.load_state_dict(in_place.state_dict())
    x = _images(2, size=32)
    with GradCAM(in_place, in_place[0]) as cam:
        maps = cam(x)
    with GradCAM(out_of_place, out_of_place[0]) as cam:
        expected = cam(x)
    torch.testing.assert_close(maps, expected)


def test_batched_maps_equal_single_image_maps(classifier: nn.Module) -> None:
    x = _images(4)
    with GradCAM(classifier, classifier.layer4) as cam:
        batched = cam(x)
        single = torch.cat([cam(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


def test_frozen_model_under_no_grad_leaves_no_trace(classifier: nn.Module) -> None:
    x = _images()
    with GradCAM(classifier, classifier.layer4) as cam:
        expected = cam(x)
    for parameter in classifier.parameters():
        parameter.requires_grad_(False)
    try:
        with torch.no_grad(), GradCAM(classifier, classifier.layer4) as cam:
            maps = cam(x)
            assert len(classifier.layer4._forward_hooks) == 1
    finally:
        for parameter in classifier.parameters():
            parameter.requires_grad_(True)
    torch.testing.assert_close(maps, expected)
    assert not maps.requires_grad
    assert len(classifier.layer4._forward_hooks) == 0
    assert all(parameter.grad is None for parameter in classifier.parameters())


@pytest.mark.parametrize("training", [False, True])
def test_mode_is_untouched(training: bool) -> None:
    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=5).train(training)
    with GradCAM(model, model.layer4) as cam:
        cam(_images(2))
    assert all(module.training == training for module in model.modules())


def test_hook_removed_on_exception_and_inactive_outside_calls(classifier: nn.Module) -> None:
    x = _images(2)
    with pytest.raises(ValueError, match="target has 3 entries"):
        with GradCAM(classifier, classifier.layer4) as cam:
            # Outside cam() calls the hook must not alter normal use of the model.
            logits = classifier(x.requires_grad_(True))
            (input_grad,) = torch.autograd.grad(logits.sum(), x)
            assert input_grad.abs().sum() > 0
            cam(x.detach(), torch.tensor([0, 1, 2]))
    assert len(classifier.layer4._forward_hooks) == 0
    with pytest.raises(RuntimeError, match="with GradCAM"):
        cam(x.detach())


def test_output_range_and_constant_map_gives_zeros() -> None:
    torch.manual_seed(0)
    # The hooked layer sees a constant image, so every map is constant before normalisation.
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 8, 8))
    with GradCAM(model, model[0]) as cam:
        flat = cam(torch.zeros(2, 3, 8, 8))
    assert flat.shape == (2, 1, 8, 8)
    assert torch.equal(flat, torch.zeros_like(flat))

    classifier = resnet18(weights=None, num_classes=5).eval()
    with GradCAM(classifier, classifier.layer4) as cam:
        maps = cam(_images(4))
    assert not torch.isnan(maps).any()
    assert maps.min() >= 0 and maps.max() <= 1
    per_image_max = maps.flatten(1).max(dim=1).values
    non_constant = per_image_max > 0
    assert non_constant.any()
    torch.testing.assert_close(
        per_image_max[non_constant], torch.ones_like(per_image_max[non_constant])
    )


def test_compute_cams_batches_and_dtype(classifier: nn.Module) -> None:
    x = _images(5)
    with GradCAM(classifier, classifier.layer4) as cam:
        expected = cam(x)
    cams = compute_cams(classifier, classifier.layer4, x, batch_size=2)
    assert cams.shape == (5, 1, 64, 64)
    assert cams.dtype == torch.float16 and cams.device.type == "cpu"
    torch.testing.assert_close(cams.float(), expected, atol=1e-3, rtol=0)
    exact = compute_cams(classifier, classifier.layer4, x, batch_size=3, dtype=torch.float32)
    torch.testing.assert_close(exact, expected, atol=1e-5, rtol=0)
    target = torch.tensor([1, 1, 3, 0, 2])
    with GradCAM(classifier, classifier.layer4) as cam:
        expected_target = cam(x, target)
    given = compute_cams(
        classifier, classifier.layer4, x, batch_size=2, target=target, dtype=torch.float32
    )
    torch.testing.assert_close(given, expected_target, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="dtype"):
        compute_cams(classifier, classifier.layer4, x, dtype=torch.float64)


def test_binarize_is_inclusive_threshold() -> None:
    cam = torch.tensor([[[[0.0, 0.49, 0.5, 0.51, 1.0]]]])
    assert binarize(cam, 0.5).tolist() == [[[[0.0, 0.0, 1.0, 1.0, 1.0]]]]


def _random_cams(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_p_one_occludes_exactly_the_binarised_region() -> None:
    cam = _random_cams(6)
    factor, selected = masking_factor(cam, threshold=0.5, p=1.0)
    assert selected.all()
    assert torch.equal(factor, 1 - (cam >= 0.5).float())
    keep, _ = masking_factor(cam, threshold=0.3, p=1.0, mode="keep")
    assert torch.equal(keep, (cam >= 0.3).float())


def test_p_zero_leaves_everything() -> None:
    cam = _random_cams(6)
    for mode in MASK_MODES:
        factor, selected = masking_factor(cam, threshold=0.5, p=0.0, mode=mode)
        assert not selected.any()
        assert torch.equal(factor, torch.ones_like(cam))


def test_selected_fraction_matches_p_and_unselected_are_ones() -> None:
    cam = _random_cams(4000)
    factor, selected = masking_factor(
        cam, threshold=0.5, p=0.4, generator=torch.Generator().manual_seed(3)
    )
    assert abs(selected.float().mean().item() - 0.4) < 0.03
    assert torch.equal(factor[~selected], torch.ones_like(factor[~selected]))
    assert torch.equal(factor[selected], 1 - (cam[selected] >= 0.5).float())


def test_per_batch_draw_masks_all_or_none_of_a_batch() -> None:
    """The authors' released code draws once per batch; the paper's text, once per sample."""
    generator = torch.Generator().manual_seed(4)
    batches = [_random_cams(8, seed=s) for s in range(200)]
    selections = [
        masking_factor(c, threshold=0.5, p=0.5, draw="per_batch", generator=generator)[1]
        for c in batches
    ]
    assert all(s.all() or not s.any() for s in selections)
    assert 0.4 < sum(bool(s.all()) for s in selections) / len(selections) < 0.6
    per_sample = [masking_factor(c, threshold=0.5, p=0.5, generator=generator)[1] for c in batches]
    assert any(0 < s.sum() < len(s) for s in per_sample)
    with pytest.raises(ValueError, match="unknown masking draw 'per_epoch'"):
        masking_factor(batches[0], threshold=0.5, p=0.5, draw="per_epoch")


def test_seeded_generator_is_reproducible() -> None:
    cam = _random_cams(64)
    first = masking_factor(cam, threshold=0.5, p=0.5, generator=torch.Generator().manual_seed(9))
    again = masking_factor(cam, threshold=0.5, p=0.5, generator=torch.Generator().manual_seed(9))
    other = masking_factor(cam, threshold=0.5, p=0.5, generator=torch.Generator().manual_seed(10))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"p": 1.5}, "p must be in \\[0, 1\\], got 1.5"),
        ({"p": -0.1}, "got -0.1"),
        ({"p": float("nan")}, "got nan"),
        ({"threshold": 0.0}, "threshold must be in \\(0, 1\\), got 0.0"),
        ({"threshold": 1.0}, "got 1.0"),
        ({"mode": "invert"}, "'invert'.*\\['keep', 'occlude'\\]"),
    ],
)
def test_invalid_arguments_are_rejected(kwargs: dict, message: str) -> None:
    arguments = {"threshold": 0.5, "p": 0.5, "mode": "occlude"} | kwargs
    with pytest.raises(ValueError, match=message):
        masking_factor(_random_cams(2), **arguments)


def test_cam_layer_explains_the_stage_it_names() -> None:
    from trainables.config import ConfigError, load_trial_config
    from trainables.models import build_centre_classifier

    torch.manual_seed(0)
    model = build_centre_classifier(5, arch="resnet18").eval()
    x = _images()
    with model.explainer("gradcam", "sobel", "layer3") as cam:
        layer3 = cam(x)
    # The reference GradCAM at that stage, and not layer4's map.
    expected = _reference(model, x, None, layer=model.backbone.layer3)
    torch.testing.assert_close(layer3, expected, atol=1e-4, rtol=0)
    with model.explainer("gradcam", "sobel") as cam:
        assert (cam(x) - layer3).abs().max() > 0.1
    cfg = load_trial_config(None, {"masking.cam_layer": "layer3"})
    assert cfg.masking.cam.layer == "layer3"  # keys the fold's cached CAMs
    with pytest.raises(ConfigError, match="cam_layer 'layer2' with masking.attribution 'cam'"):
        load_trial_config(None, {"masking.cam_layer": "layer2", "masking.attribution": "cam"})
    with pytest.raises(ValueError, match=r"cam at layer4 only"):
        model.explainer("cam", "rgb", "layer3")
