
import numpy as np
import pytest
import torch

from kdlab.core import Batch, Outputs
from kdlab.methods import create_method
from kdlab.methods._logitstd import standardize
from kdlab.methods.kd import kd_loss
from kdlab.methods.lskd import lskd_loss
from tests.methods._method_checks import check_gradients, frozen, leaf

S = [[2.0, -1.0, 0.5, 0.0], [0.3, 0.2, -0.7, 1.5], [-1.0, 2.5, 0.0, 0.4]]
TT = [[3.0, 0.0, 1.0, -1.0], [0.0, 1.0, -2.0, 2.0], [0.5, 3.0, -1.0, 0.0]]
BATCH = Batch(torch.zeros(3, 1))


def _z(row):
    r = np.array(row, dtype=np.float64)
    return (r - r.mean()) / (r.std(ddof=1) + 1e-7)


def test_standardize_is_a_zscore_over_classes():
    x = torch.tensor(S, dtype=torch.float64)
    z = standardize(x)
    for i, row in enumerate(S):
        assert np.allclose(z[i].numpy(), _z(row))
    assert torch.allclose(z.mean(1), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    # invariant to a per-row positive scale and shift; works on token tensors [B, L, V]
    assert torch.allclose(standardize(4 * x - 7), z, atol=1e-6)
    assert standardize(torch.randn(2, 3, 5)).shape == (2, 3, 5)


def test_pinned_value():
    T = 2.0
    want = 0.0
    for zs, zt in zip(S, TT):
        ps = np.exp(_z(zs) / T); ps /= ps.sum()
        pt = np.exp(_z(zt) / T); pt /= pt.sum()
        want += float((pt * np.log(pt / ps)).sum())
    want = T * T * want / 3
    s, t = torch.tensor(S, dtype=torch.float64), torch.tensor(TT, dtype=torch.float64)
    assert lskd_loss(s, t, T).item() == pytest.approx(want, rel=1e-9)
    m = create_method("lskd").double()
    assert m(Outputs(s), Outputs(t), BATCH)["lskd"].item() == pytest.approx(9 * want, rel=1e-9)


def test_invariants():
    s, t = torch.tensor(S, dtype=torch.float64), torch.tensor(TT, dtype=torch.float64)
    assert lskd_loss(t.clone(), t).item() == pytest.approx(0, abs=1e-12)
    # zero for any student whose logits are an affine copy of the teacher's (the point of the paper)
    assert lskd_loss(5 * t + 2, t).item() == pytest.approx(0, abs=1e-9)
    assert kd_loss(5 * t + 2, t, 2.0).item() > 0.1
    plain = create_method("lskd", logit_stand=False)(Outputs(s), Outputs(t), BATCH)["lskd"]
    assert plain.item() == pytest.approx(9 * kd_loss(s, t, 2.0).item(), rel=1e-9)


def test_gradients_reach_student_not_teacher():
    torch.manual_seed(0)
    check_gradients(create_method("lskd"), Outputs(leaf(torch.randn(6, 5))), Outputs(frozen(torch.randn(6, 5))),
                    Batch(torch.zeros(6, 1)))
