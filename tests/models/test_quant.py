"""Fake quantisation (kdlab.models.quant) against hand-computed quantize/dequantize, and the
prepared model's structure."""
import pytest
import torch
from torch import nn

from kdlab.errors import IncompatibleError
from kdlab.models import create_model
from kdlab.models.quant import (
    ActFakeQuant,
    QConv2d,
    QLinear,
    calibrate,
    fake_quant_weight,
    freeze,
    prepare_qat,
    quant_params,
)
from tests.conftest import trained_like_bn


def test_activation_fake_quant_matches_hand_computed_uint8():
    q = ActFakeQuant(dtype="u8").eval()
    q.lo.fill_(-1.0)
    q.hi.fill_(1.55)  # scale (1.55 + 1) / 255 = 0.01, zero point round(0 + 1 / 0.01) = 100
    scale, zp = quant_params(q.lo, q.hi, 0, 255)
    assert float(scale) == pytest.approx(0.01) and int(zp) == 100
    x = torch.tensor([0.26, 0.263, -0.057, 2.0, -1.5, 0.0])
    # round(x / 0.01) + 100, clamped to [0, 255], minus 100, times 0.01
    expect = torch.tensor([0.26, 0.26, -0.06, 1.55, -1.0, 0.0])
    torch.testing.assert_close(q(x), expect, atol=1e-6, rtol=0)


def test_int8_activations_and_zero_exact():
    q = ActFakeQuant(dtype="s8").eval()
    q.lo.fill_(0.5)  # widened to contain 0: [0, 2.55], scale 0.01, zero point -128
    q.hi.fill_(2.55)
    scale, zp = quant_params(q.lo, q.hi, -128, 127)
    assert float(scale) == pytest.approx(0.01) and int(zp) == -128
    torch.testing.assert_close(q(torch.tensor([0.0, 1.234, 3.0, -0.2])), torch.tensor([0.0, 1.23, 2.55, 0.0]),
                               atol=1e-6, rtol=0)


def test_weight_fake_quant_is_per_channel_symmetric():
    w = torch.tensor([[0.5, -1.27, 0.3], [2.54, 0.0, -0.013]])  # scales 1.27 / 127 = 0.01, 2.54 / 127 = 0.02
    torch.testing.assert_close(fake_quant_weight(w), torch.tensor([[0.5, -1.27, 0.3], [2.54, 0.0, -0.02]]),
                               atol=1e-6, rtol=0)


def test_straight_through_gradient_is_one_inside_the_range_zero_outside():
    q = ActFakeQuant().eval()
    q.lo.fill_(-1.0)
    q.hi.fill_(1.55)
    x = torch.tensor([0.26, -0.057, 2.0, -1.5], requires_grad=True)
    q(x).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 0.0]


def test_range_is_set_by_the_first_batch_then_an_ema():
    q = ActFakeQuant(momentum=0.25).train()
    q(torch.tensor([-1.0, 3.0]))
    assert (float(q.lo), float(q.hi)) == (-1.0, 3.0)
    q(torch.tensor([1.0, 7.0]))
    assert float(q.lo) == pytest.approx(-1.0 + 0.25 * 2.0) and float(q.hi) == pytest.approx(3.0 + 0.25 * 4.0)
    q.eval()
    q(torch.tensor([-50.0, 50.0]))  # eval: frozen
    assert float(q.hi) == pytest.approx(4.0)


@pytest.mark.parametrize("name", ["cnn_tiny", "resnet8"])
def test_prepared_model_folds_bn_quantises_every_layer_and_tracks_fp32(name):
    torch.manual_seed(0)
    model = trained_like_bn(create_model(name, num_classes=10, in_channels=1)).eval()
    qat = prepare_qat(model)
    mods = list(qat.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in mods)
    assert not any(type(m) in (nn.Conv2d, nn.Linear) for m in mods)  # all swapped for Q versions
    assert sum(isinstance(m, (QConv2d, QLinear)) for m in mods) == sum(
        isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    assert any(isinstance(m, ActFakeQuant) for m in mods)
    x = torch.randn(256, 1, 16, 16)
    calibrate(qat, x.split(64))
    with torch.no_grad():
        ref, out = model(x).logits, qat.eval()(x)
        frozen = freeze(qat)(x)
    torch.testing.assert_close(frozen, out)  # frozen constants: the same function
    assert float((ref.argmax(1) == out.argmax(1)).double().mean()) > 0.9
    assert float((ref - out).abs().max()) < 0.2 * float(ref.abs().max())
    assert model.training is False and any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # untouched


def test_unsupported_layers_are_refused():
    with pytest.raises(IncompatibleError, match="cannot quantise layer"):
        prepare_qat(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)))
