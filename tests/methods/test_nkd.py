import math

import numpy as np
import pytest
import torch

from kdlab.core import Batch, Outputs
from kdlab.methods import create_method
from kdlab.methods.nkd import nkd_loss, nkd_terms
from tests.methods._method_checks import check_gradients, frozen, leaf

S = [[2.0, -1.0, 0.5, 0.0], [0.3, 0.2, -0.7, 1.5], [-1.0, 2.5, 0.0, 0.4]]
TT = [[3.0, 0.0, 1.0, -1.0], [0.0, 1.0, -2.0, 2.0], [0.5, 3.0, -1.0, 0.0]]
Y = [0, 3, 1]


def _softmax(z):
    e = np.exp(np.asarray(z, dtype=np.float64))
    return e / e.sum()


def _reference(s, t, y, T, gamma):
    """Yang et al. Eq. (8): -T_t log S_t - gamma * lambda^2 * sum_{i!=t} N(T_i^l) log N(S_i^l)."""
    lt = lnt = 0.0
    for zs, zt, g in zip(s, t, y):
        ps, pt = _softmax(zs), _softmax(zt)
        lt += -pt[g] * math.log(ps[g])
        ps_T, pt_T = _softmax(np.array(zs) / T), _softmax(np.array(zt) / T)
        for i in range(len(zs)):
            if i != g:
                ns = ps_T[i] / (1 - ps_T[g])
                nt = pt_T[i] / (1 - pt_T[g])
                lnt += -gamma * T * T * nt * math.log(ns)
    return lt / len(s), lnt / len(s)


@pytest.mark.parametrize("T,gamma", [(1.0, 1.5), (3.0, 3.5)])
def test_pinned_against_the_paper_equation(T, gamma):
    s, t, y = torch.tensor(S, dtype=torch.float64), torch.tensor(TT, dtype=torch.float64), torch.tensor(Y)
    want_t, want_nt = _reference(S, TT, Y, T, gamma)
    got_t, got_nt = nkd_terms(s, t, y, T, gamma)
    assert got_t.item() == pytest.approx(want_t, rel=1e-10)
    assert got_nt.item() == pytest.approx(want_nt, rel=1e-10)
    assert nkd_loss(s, t, y, T, gamma).item() == pytest.approx(want_t + want_nt, rel=1e-10)


def test_non_target_term_is_minimal_at_the_teacher():
    t, y = torch.tensor(TT, dtype=torch.float64), torch.tensor(Y)
    s = t.clone().requires_grad_(True)
    _, lnt = nkd_terms(s, t, y, 2.0, 1.5)
    lnt.backward()
    assert s.grad.abs().max().item() < 1e-12  # stationary point of a convex CE
    # its value there is gamma * T^2 * entropy of the normalised non-target teacher distribution
    ent = 0.0
    for zt, g in zip(TT, Y):
        p = _softmax(np.delete(np.array(zt), g) / 2.0)
        ent += -(p * np.log(p)).sum()
    assert lnt.item() == pytest.approx(1.5 * 4.0 * ent / 3, rel=1e-10)
    # any other student is worse
    other = t + torch.randn_like(t)
    assert nkd_terms(other, t, y, 2.0, 1.5)[1].item() > lnt.item()


def test_t2_scaling_and_target_logit_independence():
    s, t, y = torch.tensor(S, dtype=torch.float64), torch.tensor(TT, dtype=torch.float64), torch.tensor(Y)
    for T in (2.0, 5.0):
        assert nkd_terms(s, t, y, T, 1.0)[1].item() == pytest.approx(
            T * T * nkd_terms(s / T, t / T, y, 1.0, 1.0)[1].item())
    s2 = s.clone()
    s2[torch.arange(3), y] += 5.0  # the non-target term ignores the target logit
    assert nkd_terms(s2, t, y, 2.0, 1.5)[1].item() == pytest.approx(nkd_terms(s, t, y, 2.0, 1.5)[1].item())


def test_method_terms_labels_and_tokens():
    m = create_method("nkd", T=2.0, gamma=2.0, weight=0.5)
    s, t, y = torch.tensor(S), torch.tensor(TT), torch.tensor(Y)
    terms = m(Outputs(s), Outputs(t), Batch(torch.zeros(3, 1), y))
    lt, lnt = nkd_terms(s, t, y, 2.0, 2.0)
    assert terms["nkd_target"].item() == pytest.approx(0.5 * lt.item(), rel=1e-6)
    assert terms["nkd_nontarget"].item() == pytest.approx(0.5 * lnt.item(), rel=1e-6)
    pseudo = m(Outputs(s), Outputs(t), Batch(torch.zeros(3, 1)))
    explicit = m(Outputs(s), Outputs(t), Batch(torch.zeros(3, 1), t.argmax(1)))
    assert sum(pseudo.values()).item() == pytest.approx(sum(explicit.values()).item())
    mask = torch.tensor([[1, 0, 1]], dtype=torch.bool)
    tok = m(Outputs(s[None], mask=mask), Outputs(t[None], mask=mask), Batch(torch.zeros(1, 1), y[None]))
    flat = m(Outputs(s[[0, 2]]), Outputs(t[[0, 2]]), Batch(torch.zeros(2, 1), y[[0, 2]]))
    assert sum(tok.values()).item() == pytest.approx(sum(flat.values()).item(), rel=1e-6)


def test_logit_stand_switch():
    from kdlab.methods._logitstd import standardize

    s, t, y = torch.tensor(S), torch.tensor(TT), torch.tensor(Y)
    got = create_method("nkd", logit_stand=True)(Outputs(s), Outputs(t), Batch(torch.zeros(3, 1), y))
    assert sum(got.values()).item() == pytest.approx(nkd_loss(standardize(s), standardize(t), y).item(), rel=1e-6)


def test_gradients_reach_student_not_teacher():
    torch.manual_seed(0)
    check_gradients(create_method("nkd"), Outputs(leaf(torch.randn(6, 5))), Outputs(frozen(torch.randn(6, 5))),
                    Batch(torch.zeros(6, 1), torch.randint(0, 5, (6,))))
