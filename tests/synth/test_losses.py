"""Each synthesizer loss term against hand-computed values on tiny tensors."""
import math

import pytest
import torch

from kdlab.report.data_free import class_histogram, mean_pairwise_distance
from kdlab.synth.dafl import activation_loss, information_entropy_loss, one_hot_loss
from kdlab.synth.deepinv import bn_stat_loss, competition_loss, l2_prior, tv_losses
from kdlab.synth.dfad import discrepancy


def test_dafl_one_hot_is_cross_entropy_to_the_teachers_argmax():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    # log(1 + e^-2) and log(1 + e^-1), averaged
    assert float(one_hot_loss(logits)) == pytest.approx((math.log1p(math.exp(-2)) + math.log1p(math.exp(-1))) / 2)


def test_dafl_activation_is_minus_mean_absolute_feature():
    assert float(activation_loss(torch.tensor([[1.0, -2.0], [3.0, 0.0]]))) == pytest.approx(-1.5)


def test_dafl_information_entropy_of_the_mean_prediction_base_10():
    assert float(information_entropy_loss(torch.zeros(2, 2))) == pytest.approx(math.log10(0.5))
    # one sample with p = (0.75, 0.25)
    logits = torch.tensor([[math.log(3.0), 0.0]])
    assert float(information_entropy_loss(logits)) == pytest.approx(0.75 * math.log10(0.75) + 0.25 * math.log10(0.25))
    # two confident samples of different classes average to a balanced p̄: the minimum, log10(1/2)
    both = torch.tensor([[20.0, -20.0], [-20.0, 20.0]])
    assert float(information_entropy_loss(both)) == pytest.approx(math.log10(0.5), abs=1e-6)


def test_adversarial_discrepancies():
    s, t = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]])
    assert float(discrepancy(s, t, "l1")) == pytest.approx(1.5)
    s, t = torch.zeros(1, 2), torch.tensor([[math.log(3.0), 0.0]])
    assert float(discrepancy(s, t, "kl")) == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    with pytest.raises(ValueError, match="unknown discrepancy"):
        discrepancy(s, t, "l2")


def test_bn_statistics_loss():
    # channel 0: values 1, 3, 5, 7 (mean 4, biased variance 5); channel 1: zeros
    x = torch.tensor([[[[1.0, 3.0]], [[0.0, 0.0]]], [[[5.0, 7.0]], [[0.0, 0.0]]]])
    loss = bn_stat_loss(x, torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]))
    assert float(loss) == pytest.approx(3.0 + math.sqrt(16.0 + 1.0))


def test_total_variation_four_directions():
    x = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])
    l1, l2 = tv_losses(x)
    # right: -1, -2; down: -2, -3; anti-diagonal: 2 - 1; diagonal: 0 - 4
    assert float(l1) == pytest.approx(1.5 + 2.5 + 1.0 + 4.0)
    assert float(l2) == pytest.approx(math.sqrt(5.0) + math.sqrt(13.0) + 1.0 + 4.0)


def test_l2_prior_is_the_mean_sample_norm():
    assert float(l2_prior(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))) == pytest.approx(2.5)


def test_competition_is_one_minus_clamped_jensen_shannon():
    same = torch.tensor([[1.0, -1.0, 0.5]])
    assert float(competition_loss(same, same)) == pytest.approx(1.0)
    s, t = torch.tensor([[30.0, -30.0]]), torch.tensor([[-30.0, 30.0]])
    # P, Q clamp to (0.99, 0.01) and (0.01, 0.99); M = (0.5, 0.5)
    kl = 0.99 * math.log(0.99 / 0.5) + 0.01 * math.log(0.01 / 0.5)
    assert float(competition_loss(s, t, T=1.0)) == pytest.approx(1.0 - kl, abs=1e-6)


def test_diversity_and_histogram():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    assert mean_pairwise_distance(x) == pytest.approx(10.0 / 3.0)  # pairs: 5, 0, 5
    assert mean_pairwise_distance(torch.ones(4, 3)) == 0.0  # collapse
    assert class_histogram(torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.0, 3.0, 0.0]]), 3) == [1, 2, 0]
