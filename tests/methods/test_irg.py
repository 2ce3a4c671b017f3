import numpy as np
import pytest
import torch

from kdlab.core import Batch, DataInfo, Outputs
from kdlab.errors import IncompatibleError
from kdlab.methods import create_method
from kdlab.methods.irg import align_pair, edge_matrix, irg_terms, transform_vector
from tests.methods._method_checks import check_gradients, frozen, leaf

INFO = DataInfo(3, 10, (3, 8, 8))


def _edges(f):
    B = f.shape[0]
    q = f.reshape(B, -1)
    d = np.array([[float(((q[i] - q[j]) ** 2).sum()) for j in range(B)] for i in range(B)])
    return d / d.max()


def _pool2(x):  # [B, C, 4, 4] -> [B, C, 2, 2] by 2x2 averages
    B, C, H, W = x.shape
    return np.array([[[[x[b, c, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean() for j in range(W // 2)] for i in range(H // 2)]
                      for c in range(C)] for b in range(B)])


def _transform(l1, l2):  # l1 [B, 2, 4, 4], l2 [B, 4, 2, 2]: pool l1 spatially, average channel pairs of l2
    a = _pool2(l1)
    b = np.stack([(l2[:, 0] + l2[:, 1]) / 2, (l2[:, 2] + l2[:, 3]) / 2], 1)
    d = np.array([float(((a[i] - b[i]) ** 2).sum()) for i in range(len(a))])
    return d / d.max()


def _mse(a, b):
    return float(((np.asarray(a) - np.asarray(b)) ** 2).mean())


def test_pinned_against_explicit_graphs():
    rng = np.random.default_rng(0)
    B = 4
    s1, s2, sp = rng.random((B, 2, 4, 4)), rng.random((B, 4, 2, 2)), rng.random((B, 4))
    t1, t2, tp = rng.random((B, 2, 4, 4)), rng.random((B, 4, 2, 2)), rng.random((B, 6))
    zs, zt = rng.random((B, 3)), rng.random((B, 3))
    vertex = _mse(zs, zt)
    edge = np.mean([_mse(_edges(a), _edges(b)) for a, b in ((s1, t1), (s2, t2), (sp, tp))])
    tran = _mse(_transform(s1, s2), _transform(t1, t2))
    T = lambda x: torch.tensor(x)  # noqa: E731
    v, e, tr = irg_terms(T(zs), T(zt), [T(s1), T(s2), T(sp)], [T(t1), T(t2), T(tp)], [(0, 1)])
    assert v.item() == pytest.approx(vertex, rel=1e-10)
    assert e.item() == pytest.approx(edge, rel=1e-10)
    assert tr.item() == pytest.approx(tran, rel=1e-10)
    # through the method with the default weights
    m = create_method("irg")
    so = Outputs(T(zs), {"layer1": T(s1), "layer2": T(s2), "pooled": T(sp)})
    to = Outputs(T(zt), {"layer1": T(t1), "layer2": T(t2), "pooled": T(tp)})
    m.prepare(so, to, INFO)
    terms = m(so, to, Batch(torch.zeros(B, 1)))
    assert terms["irg_vertex"].item() == pytest.approx(0.1 * vertex, rel=1e-10)
    assert terms["irg_edge"].item() == pytest.approx(5 * edge, rel=1e-10)
    assert terms["irg_transform"].item() == pytest.approx(5 * tran, rel=1e-10)


def test_invariants():
    torch.manual_seed(0)
    f = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    g = torch.randn(5, 6, 2, 2, dtype=torch.float64)
    assert torch.allclose(edge_matrix(4.0 * f), edge_matrix(f))  # max-normalised: scale-free
    assert torch.allclose(transform_vector(2.0 * f, 2.0 * g), transform_vector(f, g))
    assert edge_matrix(f).diagonal().abs().max() == 0 and edge_matrix(f).max() == 1
    a, b = align_pair(f, torch.randn(5, 8, dtype=torch.float64))  # map vs vector: pooled, channels grouped
    assert a.shape == b.shape == (5, 3)
    logits = torch.randn(5, 4, dtype=torch.float64)
    for x in irg_terms(logits, logits.clone(), [f, g], [f.clone(), g.clone()], [(0, 1)]):
        assert x.item() == pytest.approx(0, abs=1e-14)
    other = [torch.randn_like(f), torch.randn_like(g)]
    l2 = torch.randn_like(logits)
    for x, y in zip(irg_terms(logits, l2, [f, g], other, [(0, 1)]), irg_terms(l2, logits, other, [f, g], [(0, 1)])):
        assert x.item() == pytest.approx(y.item(), rel=1e-12)  # MSEs are symmetric


def _outs(n_s=3, n_t=4, B=6):
    g = torch.Generator().manual_seed(0)
    sizes = [(4, 8), (8, 4), (16, 2), (32, 1)]
    s = Outputs(leaf(torch.randn(B, 5, generator=g)),
                {f"layer{i + 1}": leaf(torch.randn(B, c, h, h, generator=g)) for i, (c, h) in enumerate(sizes[:n_s])})
    s.features["pooled"] = leaf(torch.randn(B, sizes[n_s - 1][0], generator=g))
    t = Outputs(frozen(torch.randn(B, 5, generator=g)),
                {f"layer{i + 1}": frozen(torch.randn(B, 2 * c, h, h, generator=g))
                 for i, (c, h) in enumerate(sizes[:n_t])})
    t.features["pooled"] = frozen(torch.randn(B, 2 * sizes[n_t - 1][0], generator=g))
    return s, t


def test_layer_selection_and_incompatibility():
    s, t = _outs()
    m = create_method("irg")
    m.prepare(s, t, INFO)
    assert m.pairs == [("layer2", "layer3"), ("layer3", "layer4"), ("pooled", "pooled")] and m.transform == [(0, 1)]
    m2 = create_method("irg", layers=["layer1:layer2", "layer2:layer3", "layer3:layer4"])
    m2.prepare(s, t, INFO)
    assert m2.transform == [(0, 1), (1, 2)] and len(m2.pairs) == 4
    one = Outputs(torch.zeros(2, 5), {"layer1": torch.zeros(2, 8), "pooled": torch.zeros(2, 8)})
    with pytest.raises(IncompatibleError, match="w_transform"):
        create_method("irg").prepare(one, one, INFO)
    m3 = create_method("irg", w_transform=0.0)
    m3.prepare(one, one, INFO)
    assert "irg_transform" not in m3(one, one, Batch(torch.zeros(2, 1)))
    with pytest.raises(IncompatibleError):
        create_method("irg").prepare(Outputs(torch.zeros(2, 5), {"pooled": torch.zeros(2, 3)}), one, INFO)


def test_gradients_reach_student_not_teacher():
    s, t = _outs()
    m = create_method("irg")
    m.prepare(s, t, INFO)
    s.features["layer1"].requires_grad_(False)  # not part of the default graph
    check_gradients(m, s, t, Batch(torch.zeros(6, 1)))
