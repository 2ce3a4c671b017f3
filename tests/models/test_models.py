"""Every registered model honours the Outputs contract; CIFAR families match published sizes."""
from __future__ import annotations

import pytest
import torch

from kdlab.core import Outputs
from kdlab.models import create_model, input_kind, list_models

SHAPES = [(1, 28, 28), (3, 32, 32)]

# Parameter counts at 100 classes, 3x32x32, as published for the CIFAR-100 distillation
# benchmarks (CRD, Tian et al. 2020, and the code released with it).
PUBLISHED_M = {
    "resnet8": 0.08,
    "resnet20": 0.28,
    "resnet32": 0.47,
    "resnet56": 0.86,
    "resnet110": 1.74,
    "resnet8x4": 1.23,
    "resnet32x4": 7.43,
    "wrn_16_2": 0.70,
    "wrn_40_1": 0.57,
    "wrn_40_2": 2.26,
    "vgg8": 3.96,
    "vgg13": 9.46,
    "mobilenetv2_x0_5": 0.81,
    "shufflenetv2": 1.36,
}

# Stage count per CIFAR family: (name prefix, number of layer{i} features).
FAMILY_STAGES = {
    "resnet": 3,
    "wrn_": 3,
    "vgg": 4,
    "mobilenetv2": 4,
    "shufflenetv2": 3,
}


def _is_mlp(name: str) -> bool:
    return name.startswith("mlp")


def _family(name: str) -> str | None:
    return next((p for p in FAMILY_STAGES if name.startswith(p)), None)


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
# LMs: test_gpt.py; text classifiers: test_text_models.py
@pytest.mark.parametrize("name", [n for n in list_models() if input_kind(n) == "dense"])
def test_forward_backward(name: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    c, h, w = shape
    model = create_model(name, num_classes=7, in_channels=c, image_size=h)
    model.train()
    out = model(torch.randn(2, c, h, w))

    assert isinstance(out, Outputs)
    assert out.logits.shape == (2, 7)
    feats = out.features
    assert feats["pooled"].ndim == 2 and feats["pooled"].shape[0] == 2
    if _is_mlp(name):  # vectors only, as many layers as hidden sizes
        assert feats["layer1"].ndim == 2 and feats["layer1"].shape[0] == 2
    elif name.startswith("vit"):  # tokens [B, 1 + patches, dim]: the class token and ceil(h/4)² patches
        for i in (1, 2, 3, 4):
            assert feats[f"layer{i}"].shape == (2, 1 + ((h + 3) // 4) ** 2, feats["pooled"].shape[1])
    else:
        for i in (1, 2, 3):
            assert f"layer{i}" in feats, sorted(feats)
            assert feats[f"layer{i}"].ndim == 4 and feats[f"layer{i}"].shape[0] == 2
            assert min(feats[f"layer{i}"].shape[2:]) >= 1

    loss = out.logits.square().mean() + sum(f.mean() for f in feats.values())
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", sorted(PUBLISHED_M))
def test_param_count_matches_published(name: str) -> None:
    n = _n_params(create_model(name, num_classes=100, in_channels=3, image_size=32)) / 1e6
    # 3%, or 0.005M: the published figures are rounded to two decimals (resnet8 is 0.084M).
    assert n == pytest.approx(PUBLISHED_M[name], rel=0.03, abs=0.005), f"{name}: {n:.3f}M"


@pytest.mark.parametrize("name", [n for n in list_models() if _family(n)])
def test_cifar_family_features(name: str) -> None:
    """stem, layer{i} with a matching layer{i}_preact, layer{i} == relu(preact) (MobileNetV2's
    linear bottlenecks: identical), the stage count of the family, pooled feeding the classifier."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=5).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    feats = out.features
    assert feats["stem"].ndim == 4
    n_stages = FAMILY_STAGES[_family(name)]  # type: ignore[index]
    assert sorted(k for k in feats if k.startswith("layer") and not k.endswith("_preact")) == [
        f"layer{i}" for i in range(1, n_stages + 1)
    ]
    sizes = []
    for i in range(1, n_stages + 1):
        act, pre = feats[f"layer{i}"], feats[f"layer{i}_preact"]
        assert act.shape == pre.shape
        expected = pre if name.startswith("mobilenetv2") else pre.relu()
        torch.testing.assert_close(act, expected)
        sizes.append(act.shape[-1])
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < 32
    assert feats["pooled"].shape == (2, model.out_dim)
    if name.startswith(("resnet", "wrn_", "vgg")):  # the others widen with a 1x1 conv first
        torch.testing.assert_close(feats["pooled"], act.mean((2, 3)))


@pytest.mark.parametrize(
    "name, key",
    [
        ("resnet8", "layer1.0.conv1.weight"),
        ("resnet8x4", "layer1.0.downsample.1.running_var"),
        ("wrn_40_2", "block1.layer.0.convShortcut.weight"),
        ("wrn_40_2", "bn1.weight"),
        ("vgg13", "block4.3.weight"),
        ("vgg8", "classifier.bias"),
        ("mobilenetv2_x0_5", "blocks.6.0.conv.7.weight"),
        ("mobilenetv2_x0_5", "classifier.0.weight"),
        ("shufflenetv2", "layer3.3.bn3.weight"),
        ("shufflenetv2", "linear.weight"),
    ],
)
def test_parameter_names_follow_cifar_layout(name: str, key: str) -> None:
    assert key in create_model(name, num_classes=100).state_dict()


def test_family_options() -> None:
    half = create_model("mobilenetv2", num_classes=100, width_mult=0.5)
    assert _n_params(half) == _n_params(create_model("mobilenetv2_x0_5", num_classes=100))
    assert _n_params(create_model("mobilenetv2", num_classes=100)) > _n_params(half)
    small = create_model("shufflenetv2", num_classes=10, net_size=0.5)
    assert small(torch.randn(2, 3, 32, 32)).features["layer1"].shape[1] == 48
    with pytest.raises(ValueError):
        create_model("shufflenetv2", num_classes=10, net_size=0.7)
    wrn = create_model("wrn_16_2", num_classes=10, drop_rate=0.3).train()
    assert wrn(torch.randn(2, 3, 32, 32)).logits.shape == (2, 10)


def test_large_inputs_pool_more() -> None:
    """VGG pools after its fourth block only for inputs of 64 pixels or more."""
    small = create_model("vgg8", num_classes=10, image_size=32)
    large = create_model("vgg8", num_classes=10, image_size=64)
    assert small(torch.randn(1, 3, 32, 32)).features["layer4"].shape[-1] == 4
    assert large(torch.randn(1, 3, 64, 64)).features["layer4"].shape[-1] == 4
