import itertools

import numpy as np
import pytest
import torch

from kdlab.core import Batch, DataInfo, Outputs
from kdlab.errors import IncompatibleError
from kdlab.methods import create_method
from kdlab.methods.rkd import rkd_terms
from tests.methods._method_checks import check_gradients, frozen, leaf

FS = [[1.0, 0.0, 2.0], [0.5, -1.0, 0.0], [2.0, 1.0, 1.0], [-1.0, 0.5, 0.5]]
FT = [[0.0, 1.0], [1.0, 1.5], [2.0, -1.0], [-0.5, -0.5]]


def _huber(x):
    x = abs(x)
    return 0.5 * x * x if x < 1 else x - 0.5


def _reference(s, t):
    """Park et al. Eq. (3)-(7): mean-normalised distances and triplet angle cosines, Huber loss."""
    s, t = np.array(s), np.array(t)
    B = len(s)

    def dists(e):
        d = np.array([[np.linalg.norm(e[i] - e[j]) for j in range(B)] for i in range(B)])
        mu = sum(d[i, j] for i in range(B) for j in range(B) if i != j) / (B * (B - 1))
        return d / mu

    ds, dt = dists(s), dists(t)
    loss_d = sum(_huber(ds[i, j] - dt[i, j]) for i in range(B) for j in range(B)) / B**2

    def cos(e, i, j, k):  # angle at vertex j of the triangle (e_i, e_j, e_k)
        if i == j or k == j:
            return 0.0
        a, b = e[i] - e[j], e[k] - e[j]
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    loss_a = sum(_huber(cos(s, i, j, k) - cos(t, i, j, k)) for i, j, k in itertools.product(range(B), repeat=3)) / B**3
    return loss_d, loss_a


def test_pinned_against_the_paper_definition():
    want_d, want_a = _reference(FS, FT)
    d, a = rkd_terms(torch.tensor(FS, dtype=torch.float64), torch.tensor(FT, dtype=torch.float64))
    assert d.item() == pytest.approx(want_d, rel=1e-9)
    assert a.item() == pytest.approx(want_a, rel=1e-9)
    m = create_method("rkd")
    terms = m(Outputs(torch.zeros(4, 2), {"pooled": torch.tensor(FS)}),
              Outputs(torch.zeros(4, 2), {"pooled": torch.tensor(FT)}),
              Batch(torch.zeros(4, 1)))
    assert terms["rkd_dist"].item() == pytest.approx(25 * want_d, rel=1e-5)
    assert terms["rkd_angle"].item() == pytest.approx(50 * want_a, rel=1e-5)


def test_invariants():
    s, t = torch.tensor(FS, dtype=torch.float64), torch.tensor(FT, dtype=torch.float64)
    for x in rkd_terms(s.clone(), s):
        assert x.item() == pytest.approx(0, abs=1e-12)
    base = rkd_terms(s, t)
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    for moved in (3.5 * s, s + torch.tensor([1.0, -2.0, 4.0], dtype=torch.float64), s @ q):  # scale, shift, rotation
        for a, b in zip(rkd_terms(moved, t), base):
            assert a.item() == pytest.approx(b.item(), rel=1e-9)
    for a, b in zip(rkd_terms(t, s), base):  # the Huber distance is symmetric
        assert a.item() == pytest.approx(b.item(), rel=1e-9)


def test_needs_pooled():
    m = create_method("rkd")
    with pytest.raises(IncompatibleError, match="pooled"):
        m.prepare(Outputs(torch.zeros(2, 3), {"pooled": torch.zeros(2, 4)}), Outputs(torch.zeros(2, 3)),
                  DataInfo(3, 10, (1,)))


def test_gradients_reach_student_not_teacher():
    torch.manual_seed(0)
    s = Outputs(frozen(torch.randn(6, 3)), {"pooled": leaf(torch.randn(6, 8))})
    t = Outputs(frozen(torch.randn(6, 3)), {"pooled": frozen(torch.randn(6, 16))})
    check_gradients(create_method("rkd"), s, t, Batch(torch.zeros(6, 1)))
