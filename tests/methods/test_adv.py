import math

import pytest
import torch

from kdlab.core import Batch, DataInfo, Outputs
from kdlab.methods import create_method
from kdlab.methods.adv import discriminator_loss, reverse_grad
from kdlab.objective import parse_objective


def test_discriminator_loss_by_hand():
    # σ(0) = 1/2 on both sides: ln 2 + ln 2
    assert float(discriminator_loss(torch.zeros(3), torch.zeros(3))) == pytest.approx(2 * math.log(2))
    d_t, d_s = torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 1.0])
    by_hand = (math.log1p(math.exp(-2)) + math.log(2)) / 2 + (math.log1p(math.exp(-1)) + math.log1p(math.exp(1))) / 2
    assert float(discriminator_loss(d_t, d_s)) == pytest.approx(by_hand)


def test_reverse_grad_is_identity_forward_and_negated_backward():
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    y = reverse_grad(x, 0.5)
    assert torch.equal(y, x.detach())
    (3 * y).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-1.5, -1.5]))


def _prepared(feature="logits"):
    torch.manual_seed(0)
    m = create_method("adv", feature=feature)
    s = Outputs(torch.randn(6, 4, requires_grad=True), {"pooled": torch.randn(6, 5, requires_grad=True)})
    t = Outputs(torch.randn(6, 4), {"pooled": torch.randn(6, 8)})
    m.prepare(s, t, DataInfo(4, 6, (1, 8, 8)))
    return m, s, t


def test_one_backward_trains_both_players_against_each_other():
    m, s, t = _prepared()
    loss = m(s, t, Batch(torch.zeros(6, 1)))["adv"]
    loss.backward()
    # the student's gradient is the discriminator loss's, reversed: it ascends what the discriminator descends
    s2 = s.logits.detach().clone().requires_grad_(True)
    plain = discriminator_loss(m.disc(t.logits), m.disc(s2))
    (g,) = torch.autograd.grad(plain, s2)
    assert torch.allclose(s.logits.grad, -g)
    assert all(p.grad is not None for p in m.disc.parameters())  # the discriminator descends its loss
    # an SGD step on the discriminator alone lowers its loss; on the student alone raises it
    with torch.no_grad():
        for p in m.disc.parameters():
            p -= 0.1 * p.grad
        after_d = float(discriminator_loss(m.disc(t.logits), m.disc(s.logits)))
        after_s = float(discriminator_loss(m.disc(t.logits), m.disc(s.logits - 0.5 * s.logits.grad)))
    assert after_d < float(loss.detach()) and after_s > after_d


def test_named_feature_of_another_width_gets_a_connector():
    m, s, t = _prepared("pooled")
    assert m.connector is not None and m.connector.in_features == 5 and m.connector.out_features == 8
    assert float(m(s, t, Batch(torch.zeros(6, 1)))["adv"].detach()) > 0


def test_kd_plus_adv_parses_and_alpha_leaves_the_adversarial_weight_alone():
    methods = parse_objective("kd+adv", alpha=0.5)
    assert [x["name"] for x in methods] == ["ce", "kd", "adv"]
    assert methods[1]["weight"] == 0.5 and "weight" not in methods[2]
