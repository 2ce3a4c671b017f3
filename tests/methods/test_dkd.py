import math

import numpy as np
import pytest
import torch

from kdlab.core import Batch, Outputs
from kdlab.methods import create_method
from kdlab.methods.dkd import dkd_loss, dkd_terms
from kdlab.methods.kd import kd_loss
from tests.methods._method_checks import check_gradients, frozen, leaf

S = [[2.0, -1.0, 0.5, 0.0], [0.3, 0.2, -0.7, 1.5], [-1.0, 2.5, 0.0, 0.4]]
TT = [[3.0, 0.0, 1.0, -1.0], [0.0, 1.0, -2.0, 2.0], [0.5, 3.0, -1.0, 0.0]]
Y = [0, 3, 1]


def _reference(s, t, y, T, alpha, beta):
    """Zhao et al. Eq. (1)-(4) written out per sample."""
    tck = nck = 0.0
    for zs, zt, g in zip(s, t, y):
        ps = np.exp(np.array(zs) / T); ps /= ps.sum()
        pt = np.exp(np.array(zt) / T); pt /= pt.sum()
        bs, bt = [ps[g], 1 - ps[g]], [pt[g], 1 - pt[g]]
        tck += sum(bt[i] * math.log(bt[i] / bs[i]) for i in range(2))
        for i in range(len(zs)):
            if i != g:
                qs, qt = ps[i] / (1 - ps[g]), pt[i] / (1 - pt[g])
                nck += qt * math.log(qt / qs)
    n = len(s)
    return T * T * tck / n, T * T * nck / n, T * T * (alpha * tck + beta * nck) / n


def test_pinned_against_the_paper_equations():
    s, t, y = torch.tensor(S, dtype=torch.float64), torch.tensor(TT, dtype=torch.float64), torch.tensor(Y)
    tck, nck, total = _reference(S, TT, Y, 4.0, 1.0, 8.0)
    got_t, got_n = dkd_terms(s, t, y, 4.0)
    assert got_t.item() == pytest.approx(tck, rel=1e-10)
    assert got_n.item() == pytest.approx(nck, rel=1e-10)
    assert dkd_loss(s, t, y, 1.0, 8.0, 4.0).item() == pytest.approx(total, rel=1e-10)


def test_reformulated_kd_identity():
    # KD = TCKD + (1 - p_t^target) * NCKD, sample by sample (paper Eq. 3)
    for zs, zt, g in zip(S, TT, Y):
        s, t, y = torch.tensor([zs], dtype=torch.float64), torch.tensor([zt], dtype=torch.float64), torch.tensor([g])
        T = 2.0
        tckd, nckd = dkd_terms(s, t, y, T)
        pt_gt = torch.softmax(t / T, 1)[0, g]
        assert kd_loss(s, t, T).item() == pytest.approx((tckd + (1 - pt_gt) * nckd).item(), rel=1e-9)


def test_zero_when_equal_and_t2_scaling():
    t, y = torch.tensor(TT), torch.tensor(Y)
    a, b = dkd_terms(t.clone(), t, y, 4.0)
    assert a.item() == pytest.approx(0, abs=1e-6) and b.item() == pytest.approx(0, abs=1e-6)
    s = torch.tensor(S, dtype=torch.float64)
    t = t.double()
    for T in (1.0, 3.0, 7.0):
        got = dkd_terms(s, t, y, T)
        base = dkd_terms(s / T, t / T, y, 1.0)
        for g, b in zip(got, base):
            assert g.item() == pytest.approx(T * T * b.item(), rel=1e-9)


def test_warmup_follows_progress_and_weights():
    m = create_method("dkd")
    s, t = Outputs(torch.tensor(S)), Outputs(torch.tensor(TT))
    batch = Batch(torch.zeros(3, 1), torch.tensor(Y))
    full = sum(m(s, t, batch).values())
    m.set_progress(0, 240)
    assert sum(m(s, t, batch).values()).item() == pytest.approx(full.item() / 20, rel=1e-6)
    m.set_progress(9, 240)
    assert sum(m(s, t, batch).values()).item() == pytest.approx(full.item() / 2, rel=1e-6)
    m.set_progress(100, 240)
    assert sum(m(s, t, batch).values()).item() == pytest.approx(full.item(), rel=1e-6)
    tckd, nckd = dkd_terms(torch.tensor(S), torch.tensor(TT), torch.tensor(Y), 4.0)
    terms = m(s, t, batch)
    assert terms["dkd_tckd"].item() == pytest.approx(tckd.item(), rel=1e-6)
    assert terms["dkd_nckd"].item() == pytest.approx(8 * nckd.item(), rel=1e-6)


def test_pseudo_labels_ignore_index_and_tokens():
    m = create_method("dkd")
    s, t = torch.tensor(S), torch.tensor(TT)
    no_labels = m(Outputs(s), Outputs(t), Batch(torch.zeros(3, 1)))
    with_argmax = m(Outputs(s), Outputs(t), Batch(torch.zeros(3, 1), t.argmax(1)))
    assert sum(no_labels.values()).item() == pytest.approx(sum(with_argmax.values()).item())
    ignored = m(Outputs(s), Outputs(t), Batch(torch.zeros(3, 1), torch.tensor([0, -100, 1])))
    first_last = m(Outputs(s[[0, 2]]), Outputs(t[[0, 2]]), Batch(torch.zeros(2, 1), torch.tensor([0, 1])))
    assert sum(ignored.values()).item() == pytest.approx(sum(first_last.values()).item())
    # token logits [B, L, V] with a mask: only the kept tokens count
    st = torch.stack([s, s.flip(0)])  # [2, 3, 4]
    tt = torch.stack([t, t.flip(0)])
    mask = torch.tensor([[1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    yy = torch.tensor([Y, Y[::-1]])
    tok = m(Outputs(st, mask=mask), Outputs(tt, mask=mask), Batch(torch.zeros(2, 1), yy))
    flat = m(Outputs(s[[0, 1, 0]]), Outputs(t[[0, 1, 0]]), Batch(torch.zeros(3, 1), torch.tensor([0, 3, 0])))
    assert sum(tok.values()).item() == pytest.approx(sum(flat.values()).item(), rel=1e-6)


def test_logit_stand_standardizes_before_temperature():
    from kdlab.methods._logitstd import standardize

    s, t, y = torch.tensor(S), torch.tensor(TT), torch.tensor(Y)
    m = create_method("dkd", logit_stand=True, T=2.0)
    got = sum(m(Outputs(s), Outputs(t), Batch(torch.zeros(3, 1), y)).values())
    want = dkd_loss(standardize(s), standardize(t), y, 1.0, 8.0, 2.0)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    # invariant to per-row affine rescaling of either side's logits
    got2 = sum(m(Outputs(3 * s + 1), Outputs(0.5 * t - 2), Batch(torch.zeros(3, 1), y)).values())
    assert got2.item() == pytest.approx(got.item(), rel=1e-4)


def test_gradients_reach_student_not_teacher():
    torch.manual_seed(0)
    s = Outputs(leaf(torch.randn(5, 7)))
    t = Outputs(frozen(torch.randn(5, 7)))
    check_gradients(create_method("dkd"), s, t, Batch(torch.zeros(5, 1), torch.randint(0, 7, (5,))))
