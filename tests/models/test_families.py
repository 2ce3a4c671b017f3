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
