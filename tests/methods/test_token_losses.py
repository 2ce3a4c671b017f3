"""Token-level divergences (fkl, rkl, jsd, skl, tv): pinned against hand-computed values on two-token
vocabularies, masking (prompt and padding never count), chunking (same value and gradient), and
TRL's generalised JSD on the same tensors when trl is installed."""
from __future__ import annotations

import math

import pytest
import torch

from kdlab.core import Batch, Outputs
from kdlab.data.text import causal_pairs, model_inputs
from kdlab.methods import create_method
from kdlab.methods._tokens import masked_token_mean
from kdlab.methods.fkl import forward_kl
from kdlab.methods.jsd import generalized_jsd
from kdlab.methods.rkl import reverse_kl
from kdlab.methods.skl import skew_kl
from kdlab.methods.tv import total_variation

# student p_S = (1/2, 1/2), teacher p_T = (3/4, 1/4)
S = torch.tensor([[0.0, 0.0]])
T = torch.tensor([[math.log(3.0), 0.0]])


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


PS, PT = (0.5, 0.5), (0.75, 0.25)


def test_pinned_values_on_a_two_token_vocabulary():
    assert float(forward_kl(S, T)) == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), abs=1e-6)
    assert float(forward_kl(S, T)) == pytest.approx(0.1308120, abs=1e-6)
    assert float(reverse_kl(S, T)) == pytest.approx(0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(2.0), abs=1e-6)
    m = (0.625, 0.375)  # 0.5·p_T + 0.5·p_S
    assert float(generalized_jsd(S, T, 0.5)) == pytest.approx(0.5 * kl(PT, m) + 0.5 * kl(PS, m), abs=1e-6)
    m9 = (0.9 * 0.75 + 0.1 * 0.5, 0.9 * 0.25 + 0.1 * 0.5)  # β = 0.9
    assert float(generalized_jsd(S, T, 0.9)) == pytest.approx(0.9 * kl(PT, m9) + 0.1 * kl(PS, m9), abs=1e-6)
    # TRL's endpoints: β = 0 is the forward KL, β = 1 the reverse KL
    assert float(generalized_jsd(S, T, 0.0)) == pytest.approx(float(forward_kl(S, T)), abs=1e-7)
    assert float(generalized_jsd(S, T, 1.0)) == pytest.approx(float(reverse_kl(S, T)), abs=1e-7)
    skew = (0.1 * 0.75 + 0.9 * 0.5, 0.1 * 0.25 + 0.9 * 0.5)
    assert float(skew_kl(S, T, 0.1)) == pytest.approx(kl(PT, skew), abs=1e-6)
    rskew = (0.1 * 0.5 + 0.9 * 0.75, 0.1 * 0.5 + 0.9 * 0.25)
    assert float(skew_kl(S, T, 0.1, reverse=True)) == pytest.approx(kl(PS, rskew), abs=1e-6)
    assert float(total_variation(S, T)) == pytest.approx(0.25, abs=1e-7)
    # temperature 2: both distributions flatten (sqrt of the odds)
    pt2 = (math.sqrt(3) / (1 + math.sqrt(3)), 1 / (1 + math.sqrt(3)))
    assert float(forward_kl(S, T, T=2.0)) == pytest.approx(kl(pt2, PS), abs=1e-6)


def test_identical_distributions_give_zero():
    z = torch.randn(5, 7)
    for f in (forward_kl, reverse_kl, generalized_jsd, skew_kl, total_variation):
        assert float(f(z, z).abs().max()) < 1e-6, f.__name__


def _outputs(logits: torch.Tensor, mask: torch.Tensor | None) -> Outputs:
    return Outputs(logits, {}, mask)


@pytest.mark.parametrize("name", ["fkl", "rkl", "jsd", "skl", "tv"])
def test_masked_tokens_never_count(name):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 11, generator=g), torch.randn(2, 5, 11, generator=g)
    mask = torch.tensor([[0, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    m = create_method(name)
    base = float(m(_outputs(s, mask), _outputs(t, None), Batch(s))[name])
    # garbage (even inf) at masked positions changes nothing
    s2, t2 = s.clone(), t.clone()
    s2[~mask] = 1e4
    t2[~mask] = -1e4
    assert float(m(_outputs(s2, mask), _outputs(t2, None), Batch(s))[name]) == pytest.approx(base, abs=1e-6)
    # = the mean over the kept tokens of the per-token divergence
    f = {"fkl": forward_kl, "rkl": reverse_kl, "jsd": generalized_jsd, "skl": skew_kl, "tv": total_variation}[name]
    assert base == pytest.approx(float(f(s[mask], t[mask]).mean()), abs=1e-6)


@pytest.mark.parametrize("name", ["fkl", "rkl", "jsd", "skl", "tv"])
def test_chunking_changes_neither_value_nor_gradient(name):
    g = torch.Generator().manual_seed(1)
    s0, t = torch.randn(3, 9, 13, generator=g), torch.randn(3, 9, 13, generator=g)
    mask = torch.rand(3, 9, generator=g) > 0.3
    vals, grads = [], []
    for chunk in (1, 4, 64):
        s = s0.clone().requires_grad_(True)
        v = create_method(name, chunk=chunk)(_outputs(s, mask), _outputs(t, None), Batch(s))[name]
        v.backward()
        vals.append(float(v.detach()))
        grads.append(s.grad)
    assert vals[0] == pytest.approx(vals[2], abs=1e-6) and vals[1] == pytest.approx(vals[2], abs=1e-6)
    torch.testing.assert_close(grads[0], grads[2])
    assert float(grads[2][~mask].abs().max()) == 0.0  # masked positions get no gradient


def test_no_kept_token_gives_zero_with_a_graph():
    s = torch.randn(1, 3, 5, requires_grad=True)
    v = masked_token_mean(forward_kl, s, torch.randn(1, 3, 5), torch.zeros(1, 3, dtype=torch.bool))
    assert float(v) == 0.0 and v.requires_grad


def test_shift_and_mask_are_pinned():
    # one prompted sequence (2 prompt tokens) and one padded sequence (2 real tokens)
    tokens = torch.tensor([[5, 6, 7, 8], [9, 4, 0, 0]])
    present = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    learn = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    ids, attn, y = causal_pairs(tokens, present, learn)
    assert ids.tolist() == [[5, 6, 7], [9, 4, 0]]
    assert attn.tolist() == [[True, True, True], [True, True, False]]
    # position t predicts token t + 1; the prompt token 6 and the padding are not learned
    assert y.tolist() == [[-100, 7, 8], [4, -100, -100]]
    assert model_inputs(ids, attn, y)["loss_mask"].tolist() == [[False, True, True], [True, False, False]]


def test_padding_invariance_through_a_causal_model():
    """A sequence scored alone and the same sequence right-padded inside a longer batch: the same
    token-level loss (right padding + causal attention + the loss mask)."""
    from kdlab.models import create_model

    torch.manual_seed(0)
    s_model = create_model("gpt", 17, layers=1, width=16, heads=2, context=16).eval()
    t_model = create_model("gpt", 17, layers=1, width=16, heads=2, context=16).eval()
    seq = torch.tensor([[3, 1, 4, 1, 5, 9]])
    ids, attn, y = causal_pairs(seq, torch.ones_like(seq, dtype=torch.bool), torch.ones_like(seq, dtype=torch.bool))
    alone = model_inputs(ids, attn, y)
    padded_seq = torch.tensor([[3, 1, 4, 1, 5, 9, 0, 0, 0, 0]])
    present = torch.tensor([[1] * 6 + [0] * 4], dtype=torch.bool)
    ids2, attn2, y2 = causal_pairs(padded_seq, present, torch.ones_like(present))
    padded = model_inputs(ids2, attn2, y2)
    for name in ("fkl", "rkl", "jsd", "skl", "tv"):
        m = create_method(name)
        a = m(s_model(alone), t_model(alone), Batch(alone, y))[name]
        b = m(s_model(padded), t_model(padded), Batch(padded, y2))[name]
        assert float(a) == pytest.approx(float(b), abs=1e-6), name


def test_matches_trl_generalized_jsd():
    trl = pytest.importorskip("trl")
    try:  # trl >= 0.2x moved GKD to trl.experimental
        from trl.experimental.gkd.gkd_trainer import GKDTrainer
    except ImportError:
        from trl.trainer.gkd_trainer import GKDTrainer

    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 6, 32, generator=g), torch.randn(2, 6, 32, generator=g)
    labels = torch.randint(0, 32, (2, 6), generator=g)
    labels[0, :2] = -100
    labels[1, 4:] = -100
    for beta in (0.0, 0.1, 0.5, 0.9, 1.0):
        for temp in (1.0, 2.0):
            ref = GKDTrainer.generalized_jsd_loss(s, t, labels=labels, beta=beta, temperature=temp)
            ours = create_method("jsd", beta=beta, T=temp)(Outputs(s, {}, labels != -100), Outputs(t), Batch(s))["jsd"]
            assert float(ours) == pytest.approx(float(ref), abs=1e-5), (beta, temp, trl.__version__)


@pytest.mark.parametrize("name", ["fkl", "jsd", "skl", "tv"])
def test_a_teacher_ruling_out_tokens_gives_finite_losses_and_gradients(name):
    """-inf teacher logits (padded vocabulary entries, an aligned vocabulary) are probability 0, not NaN.
    (The reverse KL is then truly infinite wherever the student puts mass: the loop names that term.)"""
    s = torch.randn(2, 3, 6, requires_grad=True)
    t = torch.randn(2, 3, 6)
    t[..., 4:] = float("-inf")
    v = create_method(name)(_outputs(s, None), _outputs(t, None), Batch(s))[name]
    v.backward()
    assert torch.isfinite(v) and bool(torch.isfinite(s.grad).all())
