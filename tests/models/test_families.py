"""The parametrised family builders (cnn, resnet, vit) reproduce the named variants at the matching
knobs and scale with them."""
from __future__ import annotations

import pytest

from kdlab.errors import ConfigError
from kdlab.models import create_model


def _n(name: str, **kw: object) -> int:
    return sum(p.numel() for p in create_model(name, num_classes=10, in_channels=1, image_size=28, **kw).parameters())


@pytest.mark.parametrize("named, family, knobs", [
    ("cnn_tiny", "cnn", {"widths": [8, 16, 32]}),
    ("cnn_small", "cnn", {}),
    ("cnn_large", "cnn", {"widths": [64, 128, 256], "convs_per_stage": 2}),
    ("resnet8", "resnet", {}),
    ("resnet20", "resnet", {"depth": 20, "width": 16}),
    ("vit_tiny", "vit", {}),
    ("vit_small", "vit", {"dim": 128, "depth": 6}),
])
def test_family_at_named_knobs_is_the_named_model(named: str, family: str, knobs: dict) -> None:
    assert _n(family, **knobs) == _n(named)


def test_knobs_scale_the_model() -> None:
    assert _n("resnet", width=8) < _n("resnet", width=16) < _n("resnet", width=32)
    assert _n("resnet", depth=8) < _n("resnet", depth=14)
    assert _n("cnn", convs_per_stage=1) < _n("cnn", convs_per_stage=2)
    assert _n("vit", depth=2) < _n("vit", depth=4)


def test_bad_knobs_are_config_errors() -> None:
    from kdlab.core import DataInfo
    from kdlab.models.load import model_for_data

    info = DataInfo(10, 100, (1, 28, 28))
    with pytest.raises(ConfigError, match="6n\\+2"):
        model_for_data("resnet", info, depth=9)
    with pytest.raises(ConfigError, match="widths"):
        model_for_data("cnn", info, widths=[])
    with pytest.raises(ConfigError, match="no option 'width_mult'"):
        model_for_data("resnet", info, width_mult=0.5)


def test_vit_flops_count_its_transformer_blocks() -> None:
    # per block at dim 64, mlp_ratio 2, 17 tokens (16 patches of 7x7 + the class token), multiply-add = 2:
    # qkv 3·64·64 + out 64·64 + MLP 2·64·128 MACs per token, plus attention scores and mixing 2·17·64 per token
    from kdlab.evaluate.cost import count_flops

    model = create_model("vit", num_classes=10, in_channels=1, image_size=28, dim=64, depth=4, patch=7)
    per_block = 2 * 17 * (3 * 64 * 64 + 64 * 64 + 2 * 64 * 128 + 2 * 17 * 64)
    embed = 2 * 16 * (49 * 64)
    head = 2 * 64 * 10
    assert count_flops(model, (1, 28, 28)) == 4 * per_block + embed + head
