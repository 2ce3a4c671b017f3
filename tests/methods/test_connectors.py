import numpy as np
import pytest
import torch
from torch import nn

from kdlab.core import Outputs
from kdlab.errors import IncompatibleError
from kdlab.methods._connectors import (
    Connector,
    TokenConnector,
    as_tokens,
    common_size,
    connector_for,
    conv_connector,
    match_spatial,
    match_tokens,
    require_4d,
    require_same_rank,
    require_teacher,
    resolve_pairs,
    stage_keys,
)


def outs(**shapes):
    g = torch.Generator().manual_seed(0)
    return Outputs(torch.zeros(2, 3), {k: torch.randn(*s, generator=g) for k, s in shapes.items()})


def test_stage_keys_numeric_order_and_filtering():
    o = outs(stem=(2, 4, 8, 8), layer10=(2, 4, 1, 1), layer2=(2, 4, 4, 4), layer1=(2, 4, 8, 8),
             layer1_preact=(2, 4, 8, 8), pooled=(2, 4))
    assert stage_keys(o) == ["layer1", "layer2", "layer10"]
    assert stage_keys(o.features) == ["layer1", "layer2", "layer10"]
    assert stage_keys(outs(pooled=(2, 4))) == []


def test_resolve_pairs_aligns_from_the_deepest_stage():
    s = outs(layer1=(2, 4, 8, 8), layer2=(2, 8, 4, 4))
    t = outs(layer1=(2, 4, 16, 16), layer2=(2, 4, 8, 8), layer3=(2, 8, 4, 4))
    assert resolve_pairs("X", s, t, None) == [("layer1", "layer2"), ("layer2", "layer3")]
    assert resolve_pairs("X", s, t, ["layer2:layer3", "layer1"]) == [("layer2", "layer3"), ("layer1", "layer1")]
    assert resolve_pairs("X", s, t, "layer1") == [("layer1", "layer1")]


def test_resolve_pairs_suffix_and_missing_feature_message():
    s = outs(layer1=(2, 4, 8, 8), layer1_preact=(2, 4, 8, 8))
    t = outs(layer1=(2, 4, 8, 8))
    with pytest.raises(IncompatibleError, match=r"Meth needs feature 'layer1_preact' but the teacher"):
        resolve_pairs("Meth", s, t, ["layer1"], suffix="_preact")
    with pytest.raises(IncompatibleError, match=r"Meth needs stage features 'layer1_preact'"):
        resolve_pairs("Meth", s, t, None, suffix="_preact")
    with pytest.raises(IncompatibleError, match="stage features"):
        resolve_pairs("Meth", outs(pooled=(2, 4)), t, None)
    with pytest.raises(IncompatibleError, match="empty"):
        resolve_pairs("Meth", s, t, [])


def test_require_helpers_name_method_feature_and_shapes():
    a, b = torch.zeros(2, 5), torch.zeros(2, 3, 4, 4)
    with pytest.raises(IncompatibleError, match=r"AT .*'layer1'.*\(2, 5\).*\(2, 3, 4, 4\)"):
        require_4d("AT", "layer1", a, b)
    with pytest.raises(IncompatibleError, match=r"VID .*'layer2'.*\(2, 5\).*\(2, 3, 4, 4\)"):
        require_same_rank("VID", "layer2", a, b)
    require_4d("AT", "layer1", b, b)
    require_same_rank("VID", "x", a, a)
    with pytest.raises(IncompatibleError, match="needs a teacher"):
        require_teacher("FT", None)


def test_match_spatial_pool_and_interpolate():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert match_spatial(x, (4, 4)) is x
    pooled = match_spatial(x, (2, 2))
    ref = np.arange(16.0).reshape(4, 4).reshape(2, 2, 2, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(pooled[0, 0].numpy(), ref)
    up = match_spatial(torch.randn(2, 3, 7, 7), (8, 8))
    assert up.shape == (2, 3, 8, 8)
    # a constant map stays constant under both resamplings
    c = torch.full((1, 2, 7, 7), 3.0)
    assert torch.allclose(match_spatial(c, (8, 8)), torch.full((1, 2, 8, 8), 3.0))
    assert torch.allclose(match_spatial(c, (3, 5)), torch.full((1, 2, 3, 5), 3.0))
    assert common_size(torch.zeros(1, 1, 7, 9), torch.zeros(1, 1, 8, 8)) == (7, 8)


def test_conv_connector_init_and_layout():
    m = conv_connector(4, 6, kernel_size=3, bn=True, relu=True)
    assert isinstance(m[0], nn.Conv2d) and m[0].bias is None and m[0].padding == (1, 1)
    assert isinstance(m[1], nn.BatchNorm2d) and torch.all(m[1].weight == 1) and torch.all(m[1].bias == 0)
    assert isinstance(m[2], nn.ReLU)
    assert conv_connector(4, 6, bn=False)[0].bias is not None


def test_connector_for_channels_and_spatial_mismatch():
    s, t = torch.randn(3, 5, 7, 7), torch.randn(3, 9, 8, 8)
    c = connector_for("X", "layer1", s, t)
    assert isinstance(c, Connector)
    assert c(s).shape == t.shape
    s2, t2 = torch.randn(3, 5, 16, 16), torch.randn(3, 9, 8, 8)
    assert connector_for("X", "k", s2, t2)(s2).shape == t2.shape
    v, w = torch.randn(4, 10), torch.randn(4, 6)
    assert connector_for("X", "pooled", v, w)(v).shape == w.shape
    same = torch.randn(2, 4, 4, 4)
    assert isinstance(connector_for("X", "k", same, same.clone(), identity_if_same=True), nn.Identity)
    with pytest.raises(IncompatibleError, match=r"X .*'layer1'.*\(4, 10\).*\(3, 9, 8, 8\)"):
        connector_for("X", "layer1", v, t)


def test_stage_keys_and_pairs_with_suffix():
    s = outs(layer1=(2, 4, 8, 8), layer2=(2, 4, 4, 4), layer2_preact=(2, 4, 4, 4), layer3_preact=(2, 4, 2, 2))
    assert stage_keys(s, "_preact") == ["layer2", "layer3"]
    t = outs(layer1_preact=(2, 4, 8, 8), layer2_preact=(2, 4, 4, 4))
    assert resolve_pairs("X", s, t, None, suffix="_preact") == [("layer2_preact", "layer1_preact"),
                                                                 ("layer3_preact", "layer2_preact")]


def test_tokens_from_maps_and_token_count_resampling():
    x = torch.arange(24.0).view(1, 2, 3, 4)  # C=2, H=3, W=4
    tok = as_tokens(x)
    assert tok.shape == (1, 12, 2)
    for k in range(12):  # row-major positions
        assert torch.equal(tok[0, k], x[0, :, k // 4, k % 4])
    t3 = torch.randn(2, 5, 3)
    assert as_tokens(t3) is t3 and match_tokens(t3, 5) is t3
    seq = torch.arange(8.0).view(1, 8, 1)
    assert torch.equal(match_tokens(seq, 4)[0, :, 0], torch.tensor([0.5, 2.5, 4.5, 6.5]))  # pairs averaged
    up = match_tokens(torch.tensor([[[0.0], [2.0]]]), 4)[0, :, 0]
    assert torch.allclose(up, torch.tensor([0.0, 0.5, 1.5, 2.0]))  # linear, align_corners=False
    c = torch.full((2, 7, 3), 1.5)
    assert torch.allclose(match_tokens(c, 17), torch.full((2, 17, 3), 1.5))
    assert torch.allclose(match_tokens(c, 3), torch.full((2, 3, 3), 1.5))


def test_token_connectors_for_transformer_and_mixed_pairs():
    s_tok, t_tok = torch.randn(3, 17, 64), torch.randn(3, 10, 32)
    c = connector_for("FitNet", "layer2", s_tok, t_tok, relu=True, tokens=True)
    assert isinstance(c, TokenConnector) and c(s_tok).shape == t_tok.shape
    assert not any(isinstance(m, nn.ReLU) for m in c.modules())  # signed transformer targets: no ReLU
    t_map = torch.randn(3, 16, 4, 4)  # a CNN teacher map: compared as 16 tokens of 16 values
    c = connector_for("FitNet", "layer2", s_tok, t_map, relu=True, tokens=True)
    assert c(s_tok).shape == as_tokens(t_map).shape == (3, 16, 16)
    assert any(isinstance(m, nn.ReLU) for m in c.modules())  # post-ReLU map targets keep it
    s_map = torch.randn(3, 8, 8, 8)  # a CNN student facing transformer tokens
    assert connector_for("FitNet", "k", s_map, t_tok, tokens=True)(s_map).shape == t_tok.shape
    # methods that compare maps do not ask for tokens: refused with the shapes
    with pytest.raises(IncompatibleError, match=r"AB .*'layer2'.*\(3, 17, 64\).*\(3, 16, 4, 4\)"):
        connector_for("AB", "layer2", s_tok, t_map)
    with pytest.raises(IncompatibleError, match="tokens"):
        connector_for("FitNet", "k", torch.randn(3, 5), t_tok, tokens=True)
