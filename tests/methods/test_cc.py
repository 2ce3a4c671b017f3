import math

import numpy as np
import pytest
import torch

from kdlab.core import Batch, DataInfo, Outputs
from kdlab.errors import IncompatibleError
from kdlab.methods import create_method
from kdlab.methods.cc import cc_loss, rbf_correlation
from tests.methods._method_checks import check_connectors_train, check_gradients, frozen, leaf

FS = [[1.0, 0.0, 2.0], [0.5, -1.0, 0.0], [2.0, 1.0, 1.0], [-1.0, 0.5, 0.5]]
FT = [[0.0, 1.0], [1.0, 1.5], [2.0, -1.0], [-0.5, -0.5]]
INFO = DataInfo(3, 100, (3, 8, 8))


def _reference(s, t, gamma, P):
    B = len(s)

    def psi(f):
        f = [np.array(r) / np.linalg.norm(r) for r in f]
        return np.array([[sum(math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * float(f[i] @ f[j]) ** p
                              for p in range(P + 1)) for j in range(B)] for i in range(B)])

    d = psi(t) - psi(s)
    return float((d**2).sum()) / B**2


@pytest.mark.parametrize("gamma,P", [(0.4, 2), (1.0, 3)])
def test_pinned_against_the_taylor_kernel(gamma, P):
    got = cc_loss(torch.tensor(FS, dtype=torch.float64), torch.tensor(FT, dtype=torch.float64), gamma, P)
    assert got.item() == pytest.approx(_reference(FS, FT, gamma, P), rel=1e-10)


def test_kernel_converges_to_the_gaussian_rbf():
    f = torch.tensor(FS, dtype=torch.float64)
    u = f / f.norm(dim=1, keepdim=True)
    exact = torch.exp(-0.4 * torch.cdist(u, u) ** 2)
    assert torch.allclose(rbf_correlation(f, 0.4, 12), exact, atol=1e-10)
    assert not torch.allclose(rbf_correlation(f, 0.4, 2), exact, atol=1e-4)


def test_invariants():
    s, t = torch.tensor(FS, dtype=torch.float64), torch.tensor(FT, dtype=torch.float64)
    assert cc_loss(s.clone(), s).item() == pytest.approx(0, abs=1e-15)
    assert cc_loss(s, t).item() == pytest.approx(cc_loss(t, s).item(), rel=1e-12)
    assert cc_loss(3.0 * s, t).item() == pytest.approx(cc_loss(s, t).item(), rel=1e-10)


def _outs(ds=8, dt=16, n=6):
    s = Outputs(frozen(torch.randn(n, 3)), {"pooled": leaf(torch.randn(n, ds))})
    t = Outputs(frozen(torch.randn(n, 3)), {"pooled": frozen(torch.randn(n, dt))})
    return s, t


def test_connectors_from_real_shapes():
    torch.manual_seed(0)
    s, t = _outs()
    m = create_method("cc")
    m.prepare(s, t, INFO)
    assert isinstance(m.embed_s, torch.nn.Linear) and m.embed_s.in_features == 8 and m.embed_s.out_features == 128
    assert isinstance(m.embed_t, torch.nn.Identity)
    got = m(s, t, Batch(torch.zeros(6, 1)))["cc"]
    assert got.item() == pytest.approx(100 * cc_loss(m.embed_s(s.features["pooled"]), t.features["pooled"]).item(),
                                       rel=1e-6)
    both = create_method("cc", embed="both", feat_dim=32)
    both.prepare(s, t, INFO)
    assert both.embed_t.in_features == 16 and both.embed_t.out_features == 32
    none = create_method("cc", embed="none", weight=1.0)
    none.prepare(s, t, INFO)
    assert list(none.parameters()) == []
    assert none(s, t, Batch(torch.zeros(6, 1)))["cc"].item() == pytest.approx(
        cc_loss(s.features["pooled"], t.features["pooled"]).item(), rel=1e-6)
    with pytest.raises(IncompatibleError, match="pooled"):
        create_method("cc").prepare(Outputs(torch.zeros(2, 3)), t, INFO)
    with pytest.raises(Exception):
        create_method("cc", embed="teacher")


@pytest.mark.parametrize("embed", ["student", "both"])
def test_gradients_reach_student_and_connectors_not_teacher(embed):
    torch.manual_seed(0)
    s, t = _outs()
    m = create_method("cc", embed=embed)
    m.prepare(s, t, INFO)
    check_gradients(m, s, t, Batch(torch.zeros(6, 1)))
    check_connectors_train(m)
