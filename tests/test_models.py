from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import resnet18, resnet34

from trainables.models import (
    MASKING_TARGETS,
    MODEL_NAMES,
    SDNet,
    SegmentationNet,
    SobelMagnitude,
    build_centre_classifier,
    build_model,
)
from trainables.models.sdnet import LOSS_WEIGHTS


def _batch(size: int, n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 3, size, size)
    y = torch.zeros(n, 1, size, size)
    y[:, :, size // 4 : size // 2, size // 4 : size // 2] = 1.0
    return x, y


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_tiny_models_train_step(name: str, size: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, variant="tiny")
    assert isinstance(model, SegmentationNet)
    assert model.masking_target in MASKING_TARGETS
    x, y = _batch(size)
    out = model(x)
    assert out["logits"].shape == (2, 1, size, size)
    assert out["model_input"].shape == x.shape
    loss, parts = model.loss(out, x, y)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert "dice" in parts and all(not p.requires_grad for p in parts.values())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        assert model(x)["logits"].shape == (2, 1, size, size)


def test_unknown_name_and_variant_list_valid_choices() -> None:
    with pytest.raises(ValueError, match="unet.*deeplabv3plus.*sdnet"):
        build_model("segformer")
    with pytest.raises(ValueError, match="paper.*tiny"):
        build_model("unet", variant="huge")


@pytest.mark.parametrize("name", ["unet", "deeplabv3plus"])
def test_smp_models_occlude_the_input(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, variant="tiny").eval()
    assert model.masking_target == "input"
    x, _ = _batch(32)
    with torch.no_grad():
        assert torch.equal(model(x)["model_input"], x)
        assert not model(x, torch.zeros(2, 1, 32, 32))["model_input"].any()
        # A half-resolution mask is resized with nearest, so it stays binary.
        occ = (torch.rand(2, 1, 16, 16) > 0.5).float()
        out = model(x, occ)
    expected = x * occ.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert torch.equal(out["model_input"], expected)
    with torch.no_grad():
        assert torch.allclose(out["logits"], model(expected)["logits"])


def test_occlusion_with_wrong_shape_is_rejected() -> None:
    model = build_model("unet", variant="tiny")
    x, _ = _batch(32)
    with pytest.raises(ValueError, match="mask_factor"):
        model(x, torch.ones(3, 1, 32, 32))


def test_smp_dice_loss_rewards_correct_predictions() -> None:
    model = build_model("unet", variant="tiny")
    x, y = _batch(32)
    good, _ = model.loss({"logits": 20 * (2 * y - 1)}, x, y)
    bad, _ = model.loss({"logits": -20 * (2 * y - 1)}, x, y)
    assert good.item() < 0.01 and bad.item() > 0.99


def test_sdnet_occludes_the_anatomy_only() -> None:
    torch.manual_seed(0)
    model = build_model("sdnet", variant="tiny").eval()
    assert model.masking_target == "anatomy"
    x, _ = _batch(32)
    with torch.no_grad():
        plain = model(x)
        masked = model(x, torch.zeros(2, 1, 32, 32))
        ones = model(x, torch.ones(2, 1, 16, 16))
    assert torch.equal(masked["model_input"], x)
    assert torch.equal(masked["reconstruction"], plain["reconstruction"])
    assert torch.equal(masked["mu"], plain["mu"])
    assert not torch.allclose(masked["logits"], plain["logits"])
    assert torch.allclose(ones["logits"], plain["logits"])


def test_sdnet_eval_is_deterministic_and_anatomy_is_one_hot() -> None:
    torch.manual_seed(0)
    model = build_model("sdnet", variant="tiny")
    x, _ = _batch(32)
    for training in (True, False):
        model.train(training)
        anatomy = model(x)["anatomy"]
        assert anatomy.shape == (2, 8, 32, 32)
        assert set(anatomy.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(anatomy.sum(dim=1), torch.ones(2, 32, 32))
    with torch.no_grad():
        a, b = model(x), model(x)
    for key in ("logits", "reconstruction", "z", "anatomy"):
        assert torch.equal(a[key], b[key])


def test_sdnet_polyp_logit_matches_softmax_and_loss_is_weighted_sum() -> None:
    torch.manual_seed(0)
    model = build_model("sdnet", variant="tiny")
    x, y = _batch(32)
    out = model(x)
    polyp = out["seg_logits"].softmax(dim=1)[:, 1:2]
    assert torch.allclose(torch.sigmoid(out["logits"]), polyp, atol=1e-6)
    total, parts = model.loss(out, x, y)
    assert set(parts) == {"recon", "kl", "dice", "latent"}
    assert LOSS_WEIGHTS == {"recon": 1.0, "kl": 0.01, "dice": 10.0, "latent": 1.0}
    expected = sum(LOSS_WEIGHTS[k] * v for k, v in parts.items())
    assert torch.allclose(total.detach(), expected)
    assert torch.allclose(parts["recon"], F.l1_loss(out["reconstruction"], x).detach())


def test_sdnet_rejects_pretrained_encoder_settings() -> None:
    with pytest.raises(ValueError, match="from scratch"):
        build_model("sdnet", variant="tiny", encoder_weights="imagenet")
    assert isinstance(build_model("sdnet", variant="tiny", z_dim=4), SDNet)


def test_local_encoder_weights_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    source = build_model("unet", variant="tiny")
    path = tmp_path / "encoder.pth"
    torch.save(source.encoder.state_dict(), path)
    torch.manual_seed(1)
    loaded = build_model("unet", variant="tiny", encoder_weights=str(path))
    for key, value in source.encoder.state_dict().items():
        assert torch.equal(loaded.encoder.state_dict()[key], value), key


def test_torchvision_checkpoint_loads_into_smp_encoder(tmp_path) -> None:
    torch.manual_seed(0)
    backbone = resnet18()
    path = tmp_path / "resnet18.pt"
    torch.save({"state_dict": backbone.state_dict()}, path)
    model = build_model("deeplabv3plus", variant="tiny", encoder_weights=str(path))
    assert torch.equal(model.encoder.conv1.weight, backbone.conv1.weight)


def test_bad_local_encoder_weights_name_the_file(tmp_path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_model("unet", variant="tiny", encoder_weights=str(missing))
    wrong = tmp_path / "resnet34.pth"
    torch.save(resnet34().state_dict(), wrong)
    with pytest.raises(ValueError, match="resnet34.pth"):
        build_model("unet", variant="tiny", encoder_weights=str(wrong))


def test_centre_classifier_shape_and_target_layer() -> None:
    torch.manual_seed(0)
    clf = build_centre_classifier(5, arch="resnet18")
    assert clf(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    assert clf.target_layer is clf.backbone.layer4
    assert clf.num_classes == 5


def test_sobel_is_zero_on_constant_images_and_marks_edges() -> None:
    sobel = SobelMagnitude()
    constant = torch.full((2, 3, 32, 32), 0.7)
    assert sobel(constant).abs().max() < 1e-5
    step = torch.full((1, 3, 32, 32), -2.0)
    step[..., 16:] = 2.0
    out = sobel(step)
    assert out.shape == (1, 3, 32, 32)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
    assert out[..., 15:17].min() > 0.1 and out[..., :14].max() < 1e-5
    assert out.max() <= 1.0


def test_classifier_local_backbone_weights(tmp_path) -> None:
    torch.manual_seed(0)
    backbone = resnet18()
    path = tmp_path / "backbone.pth"
    torch.save(backbone.state_dict(), path)
    clf = build_centre_classifier(4, arch="resnet18", weights=str(path))
    assert torch.equal(clf.backbone.layer4[0].conv1.weight, backbone.layer4[0].conv1.weight)
    assert clf.backbone.fc.out_features == 4
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        build_centre_classifier(4, arch="resnet18", weights=str(tmp_path / "absent.pth"))


def test_classifier_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="resnet18.*resnet50"):
        build_centre_classifier(5, arch="vgg16")
    with pytest.raises(ValueError, match="imagenet"):
        build_centre_classifier(5, arch="resnet18", weights="places365")
    with pytest.raises(ValueError, match="at least 2"):
        build_centre_classifier(1, arch="resnet18")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_loss_is_computed_in_fp32_for_bf16_outputs(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, variant="tiny")
    x, y = _batch(32)
    out = model(x)
    reference, _ = model.loss(out, x, y)
    low = {k: v.bfloat16() if v.is_floating_point() else v for k, v in out.items()}
    loss, _ = model.loss(low, x, y)
    assert loss.dtype == torch.float32
    assert torch.allclose(loss, reference, rtol=2e-2)


def test_authors_variant_is_the_released_code_s_models():
    """variant authors: the plain UNet from scratch and DeepLabV3+ with ASPP rates 6/12/18 at
    output stride 16, plain (not separable) ASPP convolutions."""
    from torch import nn

    from trainables.models.plain_unet import PlainUNet

    unet = build_model("unet", variant="authors")
    assert isinstance(unet.net, PlainUNet)
    # 64 → 512 channels, bilinear ups: the classic UNet's 17.26 M parameters.
    assert sum(p.numel() for p in unet.parameters()) == 17_262_977
    out = unet(torch.randn(2, 3, 72, 56))  # odd feature sizes are padded back to the skip's
    assert out["logits"].shape == (2, 1, 72, 56)
    with pytest.raises(ValueError, match="plain UNet trained from scratch"):
        build_model("unet", variant="authors", encoder_weights="imagenet")
    deeplab = build_model("deeplabv3plus", variant="authors")
    aspp = deeplab.net.decoder.aspp[0]
    rates = [c[0].dilation[0] for c in list(aspp.convs)[1:4]]
    assert rates == [6, 12, 18]
    assert all(isinstance(c[0], nn.Conv2d) and c[0].groups == 1 for c in list(aspp.convs)[1:4])
    assert build_model("sdnet", variant="authors").__class__.__name__ == "SDNet"
