import math

import numpy as np
import pytest
import torch

from kdlab.core import Batch, Outputs
from kdlab.methods import create_method
from kdlab.methods.kd import kd_loss


def _np_kd(s: np.ndarray, t: np.ndarray, T: float) -> float:
    """Hinton KD written out by hand: T² · mean_b Σ_c p_t log(p_t / p_s)."""
    total = 0.0
    for sb, tb in zip(s, t):
        ps = np.exp(sb / T) / np.exp(sb / T).sum()
        pt = np.exp(tb / T) / np.exp(tb / T).sum()
        total += float((pt * np.log(pt / ps)).sum())
    return T * T * total / len(s)


def test_kd_pinned_value():
    s = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    t = torch.tensor([[3.0, 2.0, 1.0], [0.0, 0.0, 4.0]])
    expected = _np_kd(s.numpy().astype(np.float64), t.numpy().astype(np.float64), 2.0)
    assert kd_loss(s, t, T=2.0).item() == pytest.approx(expected, rel=1e-5)
    # first row by hand at T=1: p_t = softmax(3,2,1), p_s = its reverse
    pt = np.exp([3, 2, 1]) / np.exp([3, 2, 1]).sum()
    by_hand = float((pt * np.log(pt / pt[::-1])).sum())
    assert kd_loss(s[:1], t[:1], T=1.0).item() == pytest.approx(by_hand, rel=1e-5)


def test_kd_zero_when_equal_and_positive_otherwise():
    x = torch.randn(8, 10)
    assert kd_loss(x, x.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(torch.randn(8, 10), x, 4.0).item() > 0


def test_kd_t_squared_scaling_of_gradient():
    """Hinton §2: for large T the soft-target gradient scales as 1/T², so T²·KL keeps it constant."""
    torch.manual_seed(0)
    t = torch.randn(4, 10) * 0.1
    grads = []
    for T in (10.0, 20.0):
        s = (torch.randn(4, 10, generator=torch.Generator().manual_seed(1)) * 0.1).requires_grad_()
        kd_loss(s, t, T).backward()
        grads.append(s.grad.norm().item())
    # with T² the gradient is independent of T (it would fall by 4× from T=10 to T=20 without it)
    assert grads[0] / grads[1] == pytest.approx(1.0, rel=0.02)


def test_kd_is_t_squared_times_kl():
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    for T in (1.0, 3.0):
        kl = torch.nn.functional.kl_div(torch.log_softmax(s / T, 1), torch.log_softmax(t / T, 1), log_target=True,
                                        reduction="batchmean")
        assert kd_loss(s, t, T).item() == pytest.approx(T * T * kl.item(), rel=1e-5)


def test_kd_gradient_reaches_only_student():
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5)
    t_before = t.clone()
    m = create_method("kd", T=4.0, weight=0.9)
    terms = m(Outputs(s), Outputs(t), Batch(torch.zeros(4, 1)))
    assert set(terms) == {"kd"}
    terms["kd"].backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None and torch.equal(t, t_before)


def test_kd_weight_and_bad_temperature():
    s, t = torch.randn(3, 4), torch.randn(3, 4)
    a = create_method("kd", T=2.0, weight=1.0)(Outputs(s), Outputs(t), Batch(s))["kd"]
    b = create_method("kd", T=2.0, weight=0.25)(Outputs(s), Outputs(t), Batch(s))["kd"]
    assert b.item() == pytest.approx(0.25 * a.item())
    from kdlab.errors import ConfigError

    with pytest.raises(ConfigError, match="temperature"):
        create_method("kd", T=0)
    with pytest.raises(ConfigError, match="no hyperparameter 'tau'"):
        create_method("kd", tau=3)


def test_kd_token_logits():
    """[B, L, V] logits (language models) reduce over every token."""
    s, t = torch.randn(2, 3, 11), torch.randn(2, 3, 11)
    assert kd_loss(s, t, 2.0).item() == pytest.approx(kd_loss(s.reshape(6, 11), t.reshape(6, 11), 2.0).item(), rel=1e-6)
    assert not math.isnan(kd_loss(s, t, 2.0).item())


def test_kd_mask_and_logit_stand():
    s, t = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    m = create_method("kd", T=2.0, weight=1.0)
    got = m(Outputs(s, mask=mask), Outputs(t), Batch(s))["kd"]
    keep = mask.reshape(-1).bool()
    assert got.item() == pytest.approx(kd_loss(s.reshape(6, 5)[keep], t.reshape(6, 5)[keep], 2.0).item(), rel=1e-6)
    # logit standardisation: invariant to shifting and scaling either side's logits
    std = create_method("kd", T=2.0, weight=1.0, logit_stand=True)
    a = std(Outputs(s[0]), Outputs(t[0]), Batch(s))["kd"]
    b = std(Outputs(3 * s[0] + 7), Outputs(0.5 * t[0] - 2), Batch(s))["kd"]
    assert a.item() == pytest.approx(b.item(), rel=1e-4)
