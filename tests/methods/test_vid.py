import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdlab.core import Batch, DataInfo, Outputs
from kdlab.errors import IncompatibleError
from kdlab.methods import hyperparameters, paper
from kdlab.methods.vid import VID, softplus_inverse, vid_nll

INFO = DataInfo(num_classes=10, num_train=100, input_shape=(3, 32, 32))


def pair(s_shapes, t_shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = {k: torch.randn(*v, generator=g).relu().requires_grad_() for k, v in s_shapes.items()}
    t = {k: torch.randn(*v, generator=g).relu() for k, v in t_shapes.items()}
    b = next(iter(s.values())).shape[0]
    return Outputs(torch.zeros(b, 10), s), Outputs(torch.zeros(b, 10), t)


def ref_nll(mu, t, alpha, eps):
    """−log N(t; μ, σ²) + ½ log 2π per element, σ² = log(1 + e^α) + eps, averaged."""
    mu, t = np.asarray(mu, dtype=np.float64), np.asarray(t, dtype=np.float64)
    total, n = 0.0, 0
    for idx in np.ndindex(mu.shape):
        c = idx[1]
        var = math.log1p(math.exp(float(alpha[c]))) + eps
        total += 0.5 * ((mu[idx] - t[idx]) ** 2 / var + math.log(var))
        n += 1
    return total / n


def test_defaults_and_paper():
    assert hyperparameters("vid") == {"weight": 1.0, "init_pred_var": 5.0, "eps": 1e-5, "layers": None}
    assert paper("vid").startswith("Variational Information Distillation for Knowledge Transfer")


@pytest.mark.parametrize("shape", [(2, 3, 2, 2), (4, 3)])
def test_pinned_value_against_explicit_loop(shape):
    g = torch.Generator().manual_seed(21)
    mu, t = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    alpha = torch.tensor([-1.0, 0.5, 2.0])
    assert vid_nll(mu, t, alpha, 1e-5).item() == pytest.approx(ref_nll(mu.numpy(), t.numpy(), alpha.numpy(), 1e-5),
                                                               rel=1e-5)


def test_initial_variance_is_init_pred_var():
    assert F.softplus(torch.tensor(softplus_inverse(5.0 - 1e-5))).item() + 1e-5 == pytest.approx(5.0, rel=1e-6)
    s, t = pair({"layer1": (2, 3, 4, 4)}, {"layer1": (2, 6, 4, 4)})
    m = VID()
    m.prepare(s, t, INFO)
    var = F.softplus(m.log_scales[0]) + 1e-5
    assert torch.allclose(var, torch.full((6,), 5.0))


def test_invariants_minimum_at_residual_variance():
    g = torch.Generator().manual_seed(22)
    mu, t = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)
    # perfect prediction: only the log-variance term remains
    alpha = torch.zeros(2)
    var = math.log(2.0) + 1e-5
    assert vid_nll(t, t, alpha).item() == pytest.approx(0.5 * math.log(var), rel=1e-6)
    # the NLL is minimised in σ² at the per-channel mean squared residual: zero gradient there
    r2 = (mu - t).pow(2).mean((0, 2, 3))
    a = torch.tensor([softplus_inverse(float(v) - 1e-5) for v in r2], requires_grad=True)
    vid_nll(mu, t, a).backward()
    assert a.grad.abs().max().item() < 1e-5
    # ... and larger anywhere else
    best = vid_nll(mu, t, a.detach()).item()
    for f in (0.5, 2.0):
        other = torch.tensor([softplus_inverse(float(v) * f - 1e-5) for v in r2])
        assert vid_nll(mu, t, other).item() > best


def test_gradients_reach_student_regressors_and_variances_teacher_untouched():
    s, t = pair({"layer1": (2, 3, 7, 7), "layer2": (2, 6, 4, 4)}, {"layer1": (2, 5, 8, 8), "layer2": (2, 7, 4, 4)})
    before = {k: v.clone() for k, v in t.features.items()}
    m = VID()
    m.prepare(s, t, INFO)
    m(s, t, Batch(torch.zeros(2)))["vid"].backward()
    for k in ("layer1", "layer2"):
        assert s.features[k].grad is not None and s.features[k].grad.abs().sum() > 0
    for p in list(m.regressors.parameters()) + list(m.log_scales):
        assert p.grad is not None and p.grad.abs().sum() > 0
    for k, v in t.features.items():
        assert torch.equal(v, before[k]) and not v.requires_grad and v.grad is None


def test_method_value_with_known_regressor():
    s, t = pair({"pooled": (4, 3)}, {"pooled": (4, 3)})
    m = VID(weight=2.0, layers=("pooled",))
    m.prepare(s, t, INFO)
    m.regressors[0].net = torch.nn.Identity()
    got = m(s, t, Batch(torch.zeros(4)))["vid"].item()
    alpha = np.full(3, softplus_inverse(5.0 - 1e-5))
    assert got == pytest.approx(2.0 * ref_nll(s.features["pooled"].detach().numpy(), t.features["pooled"].numpy(),
                                              alpha, 1e-5), rel=1e-5)


def test_incompatible_two_d_student_four_d_teacher():
    s, t = pair({"layer1": (2, 32)}, {"layer1": (2, 8, 8, 8)})
    with pytest.raises(IncompatibleError, match=r"VID .*'layer1'.*\(2, 32\).*\(2, 8, 8, 8\)"):
        VID().prepare(s, t, INFO)
