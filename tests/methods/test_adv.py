import math

import pytest
import torch

from kdlab.core import Batch, DataInfo, Outputs
from kdlab.methods import create_method
from kdlab.methods.adv import discriminator_loss, fooling_loss
from kdlab.objective import parse_objective


def test_discriminator_and_fooling_losses_by_hand():
    # σ(0) = 1/2 on both sides: ln 2 + ln 2
    assert float(discriminator_loss(torch.zeros(3), torch.zeros(3))) == pytest.approx(2 * math.log(2))
    d_t, d_s = torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 1.0])
    by_hand = (math.log1p(math.exp(-2)) + math.log(2)) / 2 + (math.log1p(math.exp(-1)) + math.log1p(math.exp(1))) / 2
    assert float(discriminator_loss(d_t, d_s)) == pytest.approx(by_hand)
    # −mean log σ(d_s) = mean log(1 + e^{−d_s})
    assert float(fooling_loss(d_s)) == pytest.approx((math.log1p(math.exp(1)) + math.log1p(math.exp(-1))) / 2)
    assert float(fooling_loss(torch.tensor([50.0]))) == pytest.approx(0.0, abs=1e-12)  # bounded below


def _prepared(feature="logits"):
    torch.manual_seed(0)
    m = create_method("adv", feature=feature)
    s = Outputs(torch.randn(6, 4, requires_grad=True), {"pooled": torch.randn(6, 5, requires_grad=True)})
    t = Outputs(torch.randn(6, 4), {"pooled": torch.randn(6, 8)})
    m.prepare(s, t, DataInfo(4, 6, (1, 8, 8)))
    return m, s, t


def test_one_backward_trains_each_player_on_its_own_loss():
    m, s, t = _prepared()
    m.eval()  # spectral norm's power iteration frozen, so repeated calls see the same discriminator
    terms = m(s, t, Batch(torch.zeros(6, 1)))
    sum(terms.values()).backward()
    p_t = torch.softmax(t.logits, 1)  # logits are compared as probabilities (T = 1)
    # the student's gradient is that of the fooling loss alone
    s2 = s.logits.detach().clone().requires_grad_(True)
    (g_s,) = torch.autograd.grad(fooling_loss(m.disc(torch.softmax(s2, 1))), s2)
    assert torch.allclose(s.logits.grad, g_s)
    # the discriminator's gradient is that of its BCE alone (student detached)
    params = list(m.disc.parameters())
    p_s = torch.softmax(s.logits.detach(), 1)
    g_d = torch.autograd.grad(discriminator_loss(m.disc(p_t), m.disc(p_s)), params)
    assert all(torch.allclose(p.grad, g) for p, g in zip(params, g_d))
    # a step on the discriminator lowers its loss; a step on the student lowers its fooling loss
    with torch.no_grad():
        before_d = float(terms["adv_d"])
        before_s = float(fooling_loss(m.disc(p_s)))
        for p in params:
            p -= 0.5 * p.grad
        assert float(discriminator_loss(m.disc(p_t), m.disc(p_s))) < before_d
        after_s = float(fooling_loss(m.disc(torch.softmax(s.logits - 5.0 * s.logits.grad, 1))))
        assert after_s < float(fooling_loss(m.disc(p_s))), (before_s, after_s)


def test_named_feature_of_another_width_gets_a_connector():
    m, s, t = _prepared("pooled")
    assert m.connector is not None and m.connector.in_features == 5 and m.connector.out_features == 8
    assert float(m(s, t, Batch(torch.zeros(6, 1)))["adv"].detach()) > 0


def test_kd_plus_adv_parses_and_alpha_leaves_the_adversarial_weight_alone():
    methods = parse_objective("kd+adv", alpha=0.5)
    assert [x["name"] for x in methods] == ["ce", "kd", "adv"]
    assert methods[1]["weight"] == 0.5 and "weight" not in methods[2]
