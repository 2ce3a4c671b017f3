import math

import numpy as np
import pytest
import torch

from kdlab.core import Batch, Outputs
from kdlab.engine.distiller import Distiller
from kdlab.methods import create_method
from kdlab.methods.ctkd import cosine_lambda, soft_kl
from tests.methods._method_checks import check_connectors_train, check_gradients, frozen, leaf

S = [[2.0, -1.0, 0.5, 0.0], [0.3, 0.2, -0.7, 1.5], [-1.0, 2.5, 0.0, 0.4]]
TT = [[3.0, 0.0, 1.0, -1.0], [0.0, 1.0, -2.0, 2.0], [0.5, 3.0, -1.0, 0.0]]
BATCH = Batch(torch.zeros(3, 1))


def _kd_numpy(s, t, T):
    tot = 0.0
    for zs, zt in zip(s, t):
        ps = np.exp(np.array(zs) / T); ps /= ps.sum()
        pt = np.exp(np.array(zt) / T); pt /= pt.sum()
        tot += float((pt * np.log(pt / ps)).sum())
    return T * T * tot / len(s)


def test_pinned_value_at_the_initial_temperature():
    m = create_method("ctkd").double()
    T0 = 1.0 + 20.0 / (1.0 + math.exp(-1.0))  # theta starts at 1
    assert m.temperature == pytest.approx(T0)
    got = m(Outputs(torch.tensor(S, dtype=torch.float64)), Outputs(torch.tensor(TT, dtype=torch.float64)), BATCH)
    assert got["ctkd"].item() == pytest.approx(0.9 * _kd_numpy(S, TT, T0), rel=1e-10)


def test_soft_kl_invariants():
    s, t = torch.tensor(S, dtype=torch.float64), torch.tensor(TT, dtype=torch.float64)
    assert soft_kl(t.clone(), t, torch.tensor(7.0, dtype=torch.float64)).item() == pytest.approx(0, abs=1e-12)
    for T in (2.0, 9.0):
        assert soft_kl(s, t, T).item() == pytest.approx(T * T * soft_kl(s / T, t / T, 1.0).item(), rel=1e-10)


def test_curriculum_schedule():
    m = create_method("ctkd")
    assert m.lambda_ == 1.0  # no progress reported yet
    m.set_progress(0, 240)  # first epoch is epoch 1 of the authors' loop
    assert m.lambda_ == pytest.approx(0.5 * (1 - math.cos(math.pi / 10)))
    m.set_progress(4, 240)
    assert m.lambda_ == pytest.approx(0.5)
    m.set_progress(9, 240)
    assert m.lambda_ == pytest.approx(1.0)
    m.set_progress(200, 240)
    assert m.lambda_ == pytest.approx(1.0)
    assert cosine_lambda(0) == 0.0 and cosine_lambda(3, 0.2, 0.6, 0) == 0.6


@pytest.mark.parametrize("epoch", [0, 4, 30])
def test_temperature_gradient_is_reversed_and_scaled(epoch):
    m = create_method("ctkd").double()
    m.set_progress(epoch, 240)
    s, t = torch.tensor(S, dtype=torch.float64), torch.tensor(TT, dtype=torch.float64)
    m(Outputs(s), Outputs(t), BATCH)["ctkd"].backward()
    # the same loss without the reversal layer
    theta = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    (0.9 * soft_kl(s, t, 1.0 + 20.0 * torch.sigmoid(theta))).backward()
    assert m.temp.raw.grad.item() == pytest.approx(-m.lambda_ * theta.grad.item(), rel=1e-10)


def test_optimiser_step_raises_the_loss_through_the_temperature():
    m = create_method("ctkd")
    s, t = Outputs(torch.tensor(S)), Outputs(torch.tensor(TT))
    before = m(s, t, BATCH)["ctkd"]
    before.backward()
    with torch.no_grad():  # one plain SGD step on the temperature parameter
        m.temp.raw -= 1.0 * m.temp.raw.grad
    assert m(s, t, BATCH)["ctkd"].item() > before.item()


def test_temperature_is_a_trainable_parameter_of_the_distiller():
    d = Distiller(torch.nn.Linear(2, 3), None, [create_method("ctkd")])
    names = [n for n, p in d.named_parameters() if p.requires_grad]
    assert "methods.0.temp.raw" in names


def test_logit_stand_and_tokens():
    from kdlab.methods._logitstd import standardize

    s, t = torch.tensor(S), torch.tensor(TT)
    m = create_method("ctkd", logit_stand=True)
    got = m(Outputs(s), Outputs(t), BATCH)["ctkd"]
    assert got.item() == pytest.approx(0.9 * soft_kl(standardize(s), standardize(t), m.temperature).item(), rel=1e-5)
    mask = torch.tensor([[1, 0, 1]], dtype=torch.bool)
    tok = m(Outputs(s[None], mask=mask), Outputs(t[None], mask=mask), BATCH)["ctkd"]
    flat = m(Outputs(s[[0, 2]]), Outputs(t[[0, 2]]), BATCH)["ctkd"]
    assert tok.item() == pytest.approx(flat.item(), rel=1e-6)


def test_gradients_reach_student_and_temperature_not_teacher():
    torch.manual_seed(0)
    m = create_method("ctkd")
    check_gradients(m, Outputs(leaf(torch.randn(6, 5))), Outputs(frozen(torch.randn(6, 5))), Batch(torch.zeros(6, 1)))
    check_connectors_train(m)
