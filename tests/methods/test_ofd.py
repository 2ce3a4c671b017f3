import numpy as np
import pytest
import torch
from torch import nn

from kdlab.core import Batch, DataInfo, Outputs
from kdlab.errors import IncompatibleError
from kdlab.methods import hyperparameters, paper
from kdlab.methods.ofd import OFD, margin_from_feature, margin_from_stats, ofd_loss

_trapz = getattr(np, "trapezoid", None) or np.trapz
INFO = DataInfo(num_classes=10, num_train=100, input_shape=(3, 32, 32))


def pair(s_shapes, t_shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = {k: torch.randn(*v, generator=g).requires_grad_() for k, v in s_shapes.items()}
    t = {k: torch.randn(*v, generator=g) + 0.3 for k, v in t_shapes.items()}
    b = next(iter(s.values())).shape[0]
    return Outputs(torch.zeros(b, 10), s), Outputs(torch.zeros(b, 10), t)


def ref_negative_mean(mu, sigma):
    """E[x | x < 0] for N(mu, sigma²) by numerical integration on a fine grid."""
    x = np.linspace(mu - 12 * sigma, 0.0, 400001)
    p = np.exp(-0.5 * ((x - mu) / sigma) ** 2)
    return _trapz(x * p, x) / _trapz(p, x)


def ref_ofd(s, t, m):
    """Per element: t̂ = max(t, m_c); 0 if s ≤ t̂ ≤ 0 else (s − t̂)²; summed, / batch."""
    s, t = np.asarray(s, dtype=np.float64), np.asarray(t, dtype=np.float64)
    total = 0.0
    for idx in np.ndindex(s.shape):
        th = max(t[idx], m[idx[1]])
        if s[idx] <= th and th <= 0:
            continue
        total += (s[idx] - th) ** 2
    return total / s.shape[0]


def test_defaults_and_paper():
    assert hyperparameters("ofd") == {"weight": 1e-3, "layers": None}
    assert paper("ofd").startswith("A Comprehensive Overhaul of Feature Distillation")


@pytest.mark.parametrize("mu,sigma", [(0.0, 1.0), (0.7, 0.5), (-1.0, 2.0), (2.0, 1.0)])
def test_margin_matches_numerical_expectation(mu, sigma):
    got = margin_from_stats(torch.tensor([mu]), torch.tensor([sigma])).item()
    assert got == pytest.approx(ref_negative_mean(mu, sigma), rel=1e-4)


def test_margin_fallback_when_negatives_are_rare():
    # Φ(−mean/std) = Φ(−4) ≈ 3e-5 < 1e-3 -> −3·std
    assert margin_from_stats(torch.tensor([4.0]), torch.tensor([1.0])).item() == pytest.approx(-3.0)
    assert margin_from_stats(torch.tensor([0.0]), torch.tensor([1.0])).item() == pytest.approx(-np.sqrt(2 / np.pi),
                                                                                               rel=1e-6)


def test_margin_from_feature_uses_channel_statistics():
    g = torch.Generator().manual_seed(51)
    f = (torch.randn(4000, 2, 2, 2, generator=g) * torch.tensor([1.0, 0.5]).view(1, 2, 1, 1)
         + torch.tensor([0.0, 0.5]).view(1, 2, 1, 1))
    m = margin_from_feature(f)
    # close to the empirical mean of the negative responses
    for c in range(2):
        x = f[:, c].flatten()
        assert m[c].item() == pytest.approx(x[x < 0].mean().item(), abs=0.02)
    assert torch.all(m < 0)


def test_pinned_loss_against_explicit_loop():
    g = torch.Generator().manual_seed(52)
    s, t = torch.randn(2, 3, 2, 2, generator=g), torch.randn(2, 3, 2, 2, generator=g)
    m = torch.tensor([-0.8, -0.2, -1.5])
    got = ofd_loss(s, t, m.view(1, 3, 1, 1)).item()
    assert got == pytest.approx(ref_ofd(s.numpy(), t.numpy(), m.numpy()), rel=1e-5)


def test_pinned_hand_value():
    s = torch.tensor([[1.0, -2.0, 0.0, -0.1]])
    t = torch.tensor([[2.0, -3.0, -3.0, -0.5]])
    m = torch.tensor([-1.0, -1.0, -1.0, -1.0]).view(1, 4)
    # (1−2)² + 0 (s ≤ t̂=−1 ≤ 0) + (0+1)² + (−0.1+0.5)²
    assert ofd_loss(s, t, m).item() == pytest.approx(1 + 1 + 0.16)


def test_invariants_zero_when_student_equals_teacher():
    g = torch.Generator().manual_seed(53)
    t = torch.randn(3, 4, 3, 3, generator=g)
    m = margin_from_feature(t).view(1, 4, 1, 1)
    assert ofd_loss(t.clone(), t, m).item() == 0.0
    # anything below the margin where the teacher is below it costs nothing
    below = torch.where(t <= m, t - 5.0, t)
    assert ofd_loss(below, t, m).item() == 0.0
    assert ofd_loss(t + 0.1, t, m).item() > 0


def test_method_margins_weights_and_value():
    shapes = {"layer1_preact": (4, 3, 4, 4), "layer2_preact": (4, 4, 2, 2)}
    s, t = pair(shapes, shapes)
    m = OFD(weight=1.0)
    m.prepare(s, t, INFO)
    assert m.pairs == [("layer1_preact", "layer1_preact"), ("layer2_preact", "layer2_preact")]
    assert set(k for k in m.state_dict() if k.startswith("margin")) == {"margin0", "margin1"}
    m.connectors = nn.ModuleList([nn.Identity(), nn.Identity()])
    got = m(s, t, Batch(torch.zeros(4)))["ofd"].item()
    ref = 0.0
    for w, (i, k) in zip((0.5, 1.0), enumerate(shapes)):
        x = t.features[k].numpy().astype(np.float64).transpose(1, 0, 2, 3).reshape(shapes[k][1], -1)
        margins = [margin_from_stats(torch.tensor([r.mean()]), torch.tensor([r.std()])).item() for r in x]
        np.testing.assert_allclose(m.margin(i).flatten().numpy(), margins, rtol=1e-5)
        ref += w * ref_ofd(s.features[k].detach().numpy(), t.features[k].numpy(), margins)
    assert got == pytest.approx(ref, rel=1e-5)


def test_gradients_reach_student_and_connectors_teacher_untouched():
    s, t = pair({"layer1_preact": (4, 3, 7, 7), "layer2_preact": (4, 6, 4, 4)},
                {"layer1_preact": (4, 5, 8, 8), "layer2_preact": (4, 7, 4, 4)})
    before = {k: v.clone() for k, v in t.features.items()}
    m = OFD()
    m.prepare(s, t, INFO)
    m(s, t, Batch(torch.zeros(4)))["ofd"].backward()
    for k in s.features:
        assert s.features[k].grad is not None and s.features[k].grad.abs().sum() > 0
    for p in m.connectors.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    for k, v in t.features.items():
        assert torch.equal(v, before[k]) and not v.requires_grad and v.grad is None


def test_margins_survive_a_state_dict_round_trip():
    shapes = {"layer1_preact": (4, 3, 4, 4)}
    s, t = pair(shapes, shapes)
    a = OFD()
    a.prepare(s, t, INFO)
    b = OFD()
    _, t2 = pair(shapes, shapes, seed=9)
    b.prepare(s, t2, INFO)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.margin(0), b.margin(0))


def test_incompatible():
    s, t = pair({"layer1": (2, 32)}, {"layer1_preact": (2, 8, 8, 8)})
    with pytest.raises(IncompatibleError, match=r"OFD needs .*'layer1_preact'"):
        OFD().prepare(s, t, INFO)
    s2, t2 = pair({"layer1_preact": (2, 32)}, {"layer1_preact": (2, 8, 8, 8)})
    with pytest.raises(IncompatibleError, match=r"OFD .*'layer1_preact'.*\(2, 32\).*\(2, 8, 8, 8\)"):
        OFD().prepare(s2, t2, INFO)
