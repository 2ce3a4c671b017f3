import numpy as np
import pytest
import torch
from torch import nn

from kdlab.core import Batch, DataInfo, Outputs
from kdlab.errors import IncompatibleError
from kdlab.methods import hyperparameters, paper
from kdlab.methods.fsp import FSP, fsp_loss, fsp_matrix

INFO = DataInfo(num_classes=10, num_train=100, input_shape=(3, 32, 32))


def pair(s_shapes, t_shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = {k: torch.randn(*v, generator=g).relu().requires_grad_() for k, v in s_shapes.items()}
    t = {k: torch.randn(*v, generator=g).relu() for k, v in t_shapes.items()}
    b = next(iter(s.values())).shape[0]
    return Outputs(torch.zeros(b, 10), s), Outputs(torch.zeros(b, 10), t)


def ref_fsp(f1, f2):
    """G_ij = Σ_{s,t} F1[s,t,i] · F2[s,t,j] / (h·w), per sample (paper, eq. 1)."""
    f1, f2 = np.asarray(f1, dtype=np.float64), np.asarray(f2, dtype=np.float64)
    B, C1, H, W = f1.shape
    C2 = f2.shape[1]
    G = np.zeros((B, C1, C2))
    for b in range(B):
        for i in range(C1):
            for j in range(C2):
                acc = 0.0
                for y in range(H):
                    for x in range(W):
                        acc += f1[b, i, y, x] * f2[b, j, y, x]
                G[b, i, j] = acc / (H * W)
    return G


def test_defaults_and_paper():
    assert hyperparameters("fsp") == {"weight": 50.0, "layers": None, "init_epochs": None}
    assert paper("fsp").startswith("A Gift from Knowledge Distillation")


def test_pinned_matrix_and_loss_against_explicit_loop():
    g = torch.Generator().manual_seed(11)
    a, b = torch.randn(2, 3, 3, 2, generator=g), torch.randn(2, 4, 3, 2, generator=g)
    np.testing.assert_allclose(fsp_matrix(a, b).numpy(), ref_fsp(a.numpy(), b.numpy()), rtol=1e-5, atol=1e-6)
    c, d = torch.randn(2, 3, 3, 2, generator=g), torch.randn(2, 4, 3, 2, generator=g)
    ref = np.mean((ref_fsp(a.numpy(), b.numpy()) - ref_fsp(c.numpy(), d.numpy())) ** 2)
    assert fsp_loss(fsp_matrix(a, b), fsp_matrix(c, d)).item() == pytest.approx(ref, rel=1e-5)


def test_pair_with_different_sizes_pools_the_larger():
    g = torch.Generator().manual_seed(12)
    a, b = torch.randn(1, 2, 4, 4, generator=g), torch.randn(1, 3, 2, 2, generator=g)
    pooled = a.reshape(1, 2, 2, 2, 2, 2).mean((3, 5))
    np.testing.assert_allclose(fsp_matrix(a, b).numpy(), ref_fsp(pooled.numpy(), b.numpy()), rtol=1e-5, atol=1e-6)


def test_invariants():
    g = torch.Generator().manual_seed(13)
    a, b = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 5, 4, 4, generator=g)
    assert fsp_loss(fsp_matrix(a, b), fsp_matrix(a.clone(), b.clone())).item() == 0.0
    # bilinear: scaling one map scales G; G(b, a) is G(a, b) transposed
    assert torch.allclose(fsp_matrix(2 * a, b), 2 * fsp_matrix(a, b), atol=1e-6)
    assert torch.allclose(fsp_matrix(b, a), fsp_matrix(a, b).transpose(1, 2), atol=1e-6)
    x, y = fsp_matrix(a, b), fsp_matrix(a.flip(0), b.flip(0))
    assert fsp_loss(x, y).item() == pytest.approx(fsp_loss(y, x).item())


def test_method_sequence_with_stem_and_value():
    shapes = {"stem": (2, 3, 4, 4), "layer1": (2, 3, 4, 4), "layer2": (2, 4, 2, 2), "pooled": (2, 4)}
    s, t = pair(shapes, shapes)
    m = FSP(weight=2.0)
    m.prepare(s, t, INFO)
    assert m.seq == [("stem", "stem"), ("layer1", "layer1"), ("layer2", "layer2")]
    assert all(isinstance(c, nn.Identity) for c in m.connectors)
    got = m(s, t, Batch(torch.zeros(2)))["fsp"].item()
    S = {k: v.detach().numpy() for k, v in s.features.items()}
    T = {k: v.numpy() for k, v in t.features.items()}
    pool = lambda x: x.reshape(2, x.shape[1], 2, 2, 2, 2).mean((3, 5))  # noqa: E731
    ref = np.mean((ref_fsp(S["stem"], S["layer1"]) - ref_fsp(T["stem"], T["layer1"])) ** 2)
    ref += np.mean((ref_fsp(pool(S["layer1"]), S["layer2"]) - ref_fsp(pool(T["layer1"]), T["layer2"])) ** 2)
    assert got == pytest.approx(2.0 * ref, rel=1e-5)


def test_init_epochs_switches_the_term_off():
    shapes = {"layer1": (2, 3, 4, 4), "layer2": (2, 4, 2, 2)}
    s, t = pair(shapes, shapes)
    m = FSP(init_epochs=2)
    m.prepare(s, t, INFO)
    m.set_progress(1, 10)
    assert "fsp" in m(s, t, Batch(torch.zeros(2)))
    m.set_progress(2, 10)
    assert m(s, t, Batch(torch.zeros(2))) == {}


def test_gradients_reach_student_and_connectors_teacher_untouched():
    s, t = pair({"layer1": (2, 3, 7, 7), "layer2": (2, 6, 4, 4), "layer3": (2, 8, 2, 2)},
                {"stem": (2, 4, 16, 16), "layer1": (2, 5, 8, 8), "layer2": (2, 7, 4, 4), "layer3": (2, 8, 2, 2)})
    before = {k: v.clone() for k, v in t.features.items()}
    m = FSP()
    m.prepare(s, t, INFO)
    assert m.seq == [("layer1", "layer1"), ("layer2", "layer2"), ("layer3", "layer3")]  # stem on one side only
    assert isinstance(m.connectors[2], nn.Identity)
    m(s, t, Batch(torch.zeros(2)))["fsp"].backward()
    for k in ("layer1", "layer2", "layer3"):
        assert s.features[k].grad is not None and s.features[k].grad.abs().sum() > 0
    for c in m.connectors[:2]:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in c.parameters())
    for k, v in t.features.items():
        assert torch.equal(v, before[k]) and not v.requires_grad and v.grad is None


def test_incompatible():
    s, t = pair({"layer1": (2, 32), "layer2": (2, 16)}, {"layer1": (2, 8, 8, 8), "layer2": (2, 16, 4, 4)})
    with pytest.raises(IncompatibleError, match=r"FSP .*'layer1'.*\(2, 32\).*\(2, 8, 8, 8\)"):
        FSP().prepare(s, t, INFO)
    s1, t1 = pair({"layer1": (2, 4, 4, 4)}, {"layer1": (2, 4, 4, 4)})
    with pytest.raises(IncompatibleError, match="at least two"):
        FSP().prepare(s1, t1, INFO)
