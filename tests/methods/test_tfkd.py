import math

import numpy as np
import pytest
import torch

from kdlab.core import Batch, DataInfo, Outputs
from kdlab.methods import create_method
from kdlab.methods.tfkd import tfkd_loss, virtual_teacher
from tests.methods._method_checks import check_gradients, leaf

S = [[2.0, -1.0, 0.5, 0.0], [0.3, 0.2, -0.7, 1.5], [-1.0, 2.5, 0.0, 0.4]]
Y = [0, 3, 1]


def _reference(s, y, T, a):
    tot = 0.0
    for zs, g in zip(s, y):
        K = len(zs)
        pd = np.array([a if k == g else (1 - a) / (K - 1) for k in range(K)])
        q = np.exp(pd / T) / np.exp(pd / T).sum()
        p = np.exp(np.array(zs)) / np.exp(np.array(zs)).sum()
        tot += sum(q[k] * math.log(q[k] / p[k]) for k in range(K))
    return tot / len(s)


@pytest.mark.parametrize("T,a", [(20.0, 0.99), (1.0, 0.9)])
def test_pinned_against_the_paper_definition(T, a):
    s, y = torch.tensor(S, dtype=torch.float64), torch.tensor(Y)
    assert tfkd_loss(s, y, T, a).item() == pytest.approx(_reference(S, Y, T, a), rel=1e-10)
    m = create_method("tfkd", T=T, correct_prob=a).double()
    got = m(Outputs(s), None, Batch(torch.zeros(3, 1), y))["tfkd"]
    assert got.item() == pytest.approx(0.1 * _reference(S, Y, T, a), rel=1e-10)


def test_virtual_teacher_and_minimum():
    y = torch.tensor(Y)
    q = virtual_teacher(y, 4, 0.99, 20.0, torch.float64)
    assert torch.allclose(q.sum(1), torch.ones(3, dtype=torch.float64))
    assert (q.argmax(1) == y).all()
    # a student that already predicts the virtual teacher has zero loss; anything else is worse
    assert tfkd_loss(q.log(), y).item() == pytest.approx(0, abs=1e-12)
    assert tfkd_loss(q.log() + 0.1 * torch.randn(3, 4, dtype=torch.float64), y).item() > 0


def test_teacher_free_contract():
    m = create_method("tfkd")
    assert m.needs == frozenset()
    out = Outputs(torch.tensor(S))
    m.prepare(out, None, DataInfo(4, 10, (1,)))  # no teacher, no error
    assert m(out, None, Batch(torch.zeros(3, 1))) == {}  # unlabeled batch: nothing to learn from
    ignored = m(out, None, Batch(torch.zeros(3, 1), torch.tensor([0, -100, 1])))["tfkd"]
    kept = m(Outputs(torch.tensor(S)[[0, 2]]), None, Batch(torch.zeros(2, 1), torch.tensor([0, 1])))["tfkd"]
    assert ignored.item() == pytest.approx(kept.item())
    mask = torch.tensor([[1, 0, 1]], dtype=torch.bool)
    tok = m(Outputs(torch.tensor(S)[None], mask=mask), None, Batch(torch.zeros(1, 1), torch.tensor([Y])))["tfkd"]
    assert tok.item() == pytest.approx(m(Outputs(torch.tensor(S)[[0, 2]]), None,
                                         Batch(torch.zeros(2, 1), torch.tensor([0, 1])))["tfkd"].item(), rel=1e-6)


def test_logit_stand_switch():
    from kdlab.methods._logitstd import standardize

    s, y = torch.tensor(S), torch.tensor(Y)
    got = create_method("tfkd", logit_stand=True)(Outputs(s), None, Batch(torch.zeros(3, 1), y))["tfkd"]
    assert got.item() == pytest.approx(0.1 * tfkd_loss(standardize(s), y).item(), rel=1e-6)


def test_gradients_reach_student():
    torch.manual_seed(0)
    check_gradients(create_method("tfkd"), Outputs(leaf(torch.randn(5, 6))), None,
                    Batch(torch.zeros(5, 1), torch.randint(0, 6, (5,))))
