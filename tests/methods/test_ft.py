import math

import numpy as np
import pytest
import torch

from kdlab.core import Batch, DataInfo, Outputs
from kdlab.errors import IncompatibleError
from kdlab.methods import hyperparameters, paper
from kdlab.methods.ft import FT, ft_loss, reconstruction_loss

INFO = DataInfo(num_classes=10, num_train=100, input_shape=(3, 32, 32))


def pair(s_shapes, t_shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = {k: torch.randn(*v, generator=g).relu().requires_grad_() for k, v in s_shapes.items()}
    t = {k: torch.randn(*v, generator=g).relu() for k, v in t_shapes.items()}
    b = next(iter(s.values())).shape[0]
    return Outputs(torch.zeros(b, 10), s), Outputs(torch.zeros(b, 10), t)


def ref_ft(fs, ft, p=1):
    """mean_b mean_i |x_i/‖x‖ − y_i/‖y‖|^p over flattened factors."""
    fs = np.asarray(fs, dtype=np.float64).reshape(fs.shape[0], -1)
    ft = np.asarray(ft, dtype=np.float64).reshape(ft.shape[0], -1)
    total = 0.0
    for b in range(fs.shape[0]):
        ns = math.sqrt(sum(v * v for v in fs[b]))
        nt = math.sqrt(sum(v * v for v in ft[b]))
        for x, y in zip(fs[b], ft[b]):
            total += abs(x / ns - y / nt) ** p
    return total / fs.size


def test_defaults_and_paper():
    assert hyperparameters("ft") == {"weight": 500.0, "rate": 0.5, "p": 1, "layer": None, "rec_weight": 1.0}
    assert paper("ft").startswith("Paraphrasing Complex Network: Network Compression via Factor Transfer")


@pytest.mark.parametrize("p", [1, 2])
def test_pinned_value_against_explicit_loop(p):
    g = torch.Generator().manual_seed(41)
    a, b = torch.randn(2, 3, 2, 2, generator=g), torch.randn(2, 3, 2, 2, generator=g)
    assert ft_loss(a, b, p).item() == pytest.approx(ref_ft(a.numpy(), b.numpy(), p), rel=1e-5)


def test_pinned_hand_value():
    a = torch.tensor([[[[3.0, 0.0]]]])
    b = torch.tensor([[[[0.0, 0.5]]]])
    # normalised: (1, 0) vs (0, 1) -> mean |diff| = 1
    assert ft_loss(a, b).item() == pytest.approx(1.0)
    assert reconstruction_loss(torch.ones(1, 2, 2, 2), torch.zeros(1, 2, 2, 2)).item() == pytest.approx(1.0)


def test_invariants():
    g = torch.Generator().manual_seed(42)
    a, b = torch.randn(3, 4, 3, 3, generator=g), torch.randn(3, 4, 3, 3, generator=g)
    assert ft_loss(a, a.clone()).item() == 0.0
    base = ft_loss(a, b).item()
    assert ft_loss(7 * a, b).item() == pytest.approx(base, rel=1e-5)  # scale-invariant per sample
    assert ft_loss(b, a).item() == pytest.approx(base, rel=1e-6)  # symmetric
    assert ft_loss(a, b, 2).item() <= 4 / 36 + 1e-7  # unit vectors, D = 36 elements


def test_factor_shapes_and_spatial_mismatch():
    s, t = pair({"layer1": (2, 3, 14, 14), "layer2": (2, 5, 7, 7)}, {"layer1": (2, 6, 16, 16), "layer2": (2, 12, 8, 8)})
    m = FT()
    m.prepare(s, t, INFO)
    assert m.pair == ("layer2", "layer2")  # the deepest stage
    factor_t, rec = m.paraphraser(t.features["layer2"])
    assert factor_t.shape == (2, 6, 8, 8) and rec.shape == (2, 12, 8, 8)
    assert m.translator(s.features["layer2"]).shape == (2, 6, 8, 8)


def test_gradient_split_teacher_untouched():
    s, t = pair({"layer1": (2, 5, 7, 7)}, {"layer1": (2, 12, 8, 8)})
    before = {k: v.clone() for k, v in t.features.items()}
    m = FT()
    m.prepare(s, t, INFO)
    out = m(s, t, Batch(torch.zeros(2)))
    # the FT term trains the student and the translator, never the paraphraser
    out["ft"].backward(retain_graph=True)
    g = s.features["layer1"].grad
    assert g is not None and g.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.translator.parameters())
    assert all(p.grad is None for p in m.paraphraser.parameters())
    # the reconstruction term trains only the paraphraser
    s.features["layer1"].grad = None
    for p in m.translator.parameters():
        p.grad = None
    out["ft_rec"].backward()
    assert s.features["layer1"].grad is None
    assert all(p.grad is None for p in m.translator.parameters())
    assert all(p.grad is not None for p in m.paraphraser.parameters())
    for k, v in t.features.items():
        assert torch.equal(v, before[k]) and not v.requires_grad and v.grad is None


def test_joint_paraphraser_training_reduces_reconstruction():
    torch.manual_seed(0)
    s, t = pair({"layer1": (8, 4, 4, 4)}, {"layer1": (8, 8, 4, 4)})
    m = FT()
    m.prepare(s, t, INFO)
    opt = torch.optim.Adam(m.paraphraser.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        rec = m(s, t, Batch(torch.zeros(8)))["ft_rec"]
        first = rec.item() if first is None else first
        opt.zero_grad()
        rec.backward()
        opt.step()
    assert rec.item() < 0.5 * first


def test_incompatible_two_d_student():
    s, t = pair({"layer1": (2, 32)}, {"layer1": (2, 8, 8, 8)})
    with pytest.raises(IncompatibleError, match=r"FT .*'layer1'.*\(2, 32\).*\(2, 8, 8, 8\)"):
        FT().prepare(s, t, INFO)
    with pytest.raises(IncompatibleError, match="stage features"):
        FT().prepare(Outputs(torch.zeros(2, 10), {"pooled": torch.zeros(2, 4)}), t, INFO)
