import math

import numpy as np
import pytest
import torch

from kdlab.core import Batch, Outputs
from kdlab.methods import create_method
from kdlab.methods.dist import dist_loss, dist_terms
from tests.methods._method_checks import check_gradients, frozen, leaf

S = [[2.0, -1.0, 0.5, 0.0], [0.3, 0.2, -0.7, 1.5], [-1.0, 2.5, 0.0, 0.4]]
TT = [[3.0, 0.0, 1.0, -1.0], [0.0, 1.0, -2.0, 2.0], [0.5, 3.0, -1.0, 0.0]]


def _pearson(a, b, eps=1e-8):
    # the official code's eps in the denominator is kept so the comparison can be tight
    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (math.sqrt((a * a).sum()) * math.sqrt((b * b).sum()) + eps))


def _reference(s, t, tau):
    ys = np.array([np.exp(np.array(r) / tau) / np.exp(np.array(r) / tau).sum() for r in s])
    yt = np.array([np.exp(np.array(r) / tau) / np.exp(np.array(r) / tau).sum() for r in t])
    inter = 1 - np.mean([_pearson(ys[i], yt[i]) for i in range(len(s))])
    intra = 1 - np.mean([_pearson(ys[:, j], yt[:, j]) for j in range(len(s[0]))])
    return tau * tau * inter, tau * tau * intra


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_pinned_against_pearson_definition(tau):
    s, t = torch.tensor(S, dtype=torch.float64), torch.tensor(TT, dtype=torch.float64)
    inter, intra = _reference(S, TT, tau)
    got_inter, got_intra = dist_terms(s, t, tau)
    assert got_inter.item() == pytest.approx(inter, rel=1e-9)
    assert got_intra.item() == pytest.approx(intra, rel=1e-9)
    assert dist_loss(s, t, 2.0, 3.0, tau).item() == pytest.approx(2 * inter + 3 * intra, rel=1e-9)


def test_invariants():
    s, t = torch.tensor(S, dtype=torch.float64), torch.tensor(TT, dtype=torch.float64)
    a, b = dist_terms(t.clone(), t, 4.0)
    assert a.item() == pytest.approx(0, abs=1e-4) and b.item() == pytest.approx(0, abs=1e-4)  # eps only
    # Pearson is symmetric, so the loss is too
    assert dist_loss(s, t).item() == pytest.approx(dist_loss(t, s).item(), rel=1e-12)
    # tau^2 scaling and shift invariance of the softmax
    for tau in (2.0, 5.0):
        assert dist_loss(s, t, tau=tau).item() == pytest.approx(tau * tau * dist_loss(s / tau, t / tau).item(),
                                                                rel=1e-9)
    assert dist_loss(s + 3.0, t - 1.0).item() == pytest.approx(dist_loss(s, t).item(), rel=1e-9)


def test_method_terms_tokens_and_logit_stand():
    from kdlab.methods._logitstd import standardize

    s, t = torch.tensor(S), torch.tensor(TT)
    m = create_method("dist", beta=2.0, gamma=0.5, weight=3.0)
    terms = m(Outputs(s), Outputs(t), Batch(torch.zeros(3, 1)))
    inter, intra = dist_terms(s, t)
    assert terms["dist_inter"].item() == pytest.approx(6 * inter.item(), rel=1e-6)
    assert terms["dist_intra"].item() == pytest.approx(1.5 * intra.item(), rel=1e-6)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    st, tt = torch.stack([s, s.flip(0)]), torch.stack([t, t.flip(0)])
    tok = m(Outputs(st, mask=mask), Outputs(tt, mask=mask), Batch(torch.zeros(2, 1)))
    flat = m(Outputs(s[[0, 1, 2]]), Outputs(t[[0, 1, 2]]), Batch(torch.zeros(3, 1)))
    assert sum(tok.values()).item() == pytest.approx(sum(flat.values()).item(), rel=1e-6)
    ls = create_method("dist", logit_stand=True, tau=2.0)(Outputs(s), Outputs(t), Batch(torch.zeros(3, 1)))
    assert sum(ls.values()).item() == pytest.approx(dist_loss(standardize(s), standardize(t), tau=2.0).item(), rel=1e-6)


def test_gradients_reach_student_not_teacher():
    torch.manual_seed(0)
    check_gradients(create_method("dist"), Outputs(leaf(torch.randn(8, 5))), Outputs(frozen(torch.randn(8, 5))),
                    Batch(torch.zeros(8, 1)))
