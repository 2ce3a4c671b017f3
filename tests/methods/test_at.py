import math

import numpy as np
import pytest
import torch

from kdlab.core import Batch, DataInfo, Outputs
from kdlab.errors import IncompatibleError
from kdlab.methods import hyperparameters, paper
from kdlab.methods.at import AT, at_loss, attention_map

INFO = DataInfo(num_classes=10, num_train=100, input_shape=(3, 32, 32))


def pair(s_shapes, t_shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = {k: torch.randn(*v, generator=g).relu().requires_grad_() for k, v in s_shapes.items()}
    t = {k: torch.randn(*v, generator=g).relu() for k, v in t_shapes.items()}
    b = next(iter(s.values())).shape[0]
    return Outputs(torch.zeros(b, 10), s), Outputs(torch.zeros(b, 10), t)


def ref_at_loss(fs, ft, p=2.0):
    """Paper's Q = Σ... written with loops: Q[b, pos] = mean_c |A[b, c, pos]|^p, then L2-normalise."""
    fs, ft = np.asarray(fs, dtype=np.float64), np.asarray(ft, dtype=np.float64)
    B, _, H, W = fs.shape
    total = 0.0
    for b in range(B):
        qs, qt = [], []
        for i in range(H):
            for j in range(W):
                qs.append(np.mean([abs(fs[b, c, i, j]) ** p for c in range(fs.shape[1])]))
                qt.append(np.mean([abs(ft[b, c, i, j]) ** p for c in range(ft.shape[1])]))
        ns, nt = math.sqrt(sum(v * v for v in qs)), math.sqrt(sum(v * v for v in qt))
        for a, c in zip(qs, qt):
            total += (a / ns - c / nt) ** 2
    return total / (B * H * W)


def test_defaults_and_paper():
    assert hyperparameters("at") == {"p": 2.0, "weight": 1000.0, "layers": None}
    assert paper("at").startswith("Paying More Attention to Attention")


@pytest.mark.parametrize("p", [2.0, 1.0, 3.0])
def test_pinned_value_against_explicit_loop(p):
    g = torch.Generator().manual_seed(3)
    fs, ft = torch.randn(2, 3, 3, 2, generator=g), torch.randn(2, 5, 3, 2, generator=g)  # channels differ
    assert at_loss(fs, ft, p).item() == pytest.approx(ref_at_loss(fs.numpy(), ft.numpy(), p), rel=1e-5)


def test_pinned_hand_value():
    # student attention all on pixel 0, teacher all on pixel 1: ‖e0 − e1‖² = 2, averaged over 4 positions
    fs = torch.zeros(1, 1, 2, 2)
    ft = torch.zeros(1, 1, 2, 2)
    fs[0, 0, 0, 0] = 3.0
    ft[0, 0, 0, 1] = 0.5
    assert at_loss(fs, ft).item() == pytest.approx(0.5)


def test_spatial_mismatch_pools_the_larger_map():
    g = torch.Generator().manual_seed(4)
    fs, ft = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 6, 2, 2, generator=g)
    pooled = fs.reshape(2, 3, 2, 2, 2, 2).mean((3, 5))
    assert at_loss(fs, ft).item() == pytest.approx(ref_at_loss(pooled.numpy(), ft.numpy()), rel=1e-5)


def test_invariants():
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 7, 5, 5, generator=g)
    assert at_loss(a, a.clone()).item() == 0.0
    base = at_loss(a, b).item()
    assert at_loss(10 * a, b).item() == pytest.approx(base, rel=1e-5)  # scale-invariant
    assert at_loss(a, 0.1 * b).item() == pytest.approx(base, rel=1e-5)
    assert at_loss(b, a).item() == pytest.approx(base, rel=1e-6)  # symmetric
    assert base <= 4 / 25 + 1e-7  # unit vectors: ‖u − v‖² ≤ 4, spread over H·W positions
    q = attention_map(a)
    assert torch.allclose(q.norm(dim=1), torch.ones(3))


def test_method_sums_stages_with_weight():
    s, t = pair({"layer1": (2, 3, 4, 4), "layer2": (2, 6, 2, 2)}, {"layer1": (2, 5, 4, 4), "layer2": (2, 7, 2, 2)})
    m = AT(weight=10.0)
    m.prepare(s, t, INFO)
    got = m(s, t, Batch(torch.zeros(2)))["at"].item()
    ref = sum(ref_at_loss(s.features[k].detach().numpy(), t.features[k].numpy()) for k in ("layer1", "layer2"))
    assert got == pytest.approx(10.0 * ref, rel=1e-5)


def test_gradients_reach_student_teacher_untouched():
    s, t = pair({"layer1": (2, 3, 7, 7), "layer2": (2, 6, 4, 4)}, {"layer1": (2, 5, 8, 8), "layer2": (2, 7, 4, 4)})
    before = {k: v.clone() for k, v in t.features.items()}
    m = AT()
    m.prepare(s, t, INFO)
    m(s, t, Batch(torch.zeros(2)))["at"].backward()
    for k in ("layer1", "layer2"):
        assert s.features[k].grad is not None and s.features[k].grad.abs().sum() > 0
    for k, v in t.features.items():
        assert torch.equal(v, before[k]) and not v.requires_grad and v.grad is None


def test_incompatible_two_d_student():
    s, t = pair({"layer1": (2, 32)}, {"layer1": (2, 8, 8, 8)})
    with pytest.raises(IncompatibleError, match=r"AT .*'layer1'.*\(2, 32\).*\(2, 8, 8, 8\)"):
        AT().prepare(s, t, INFO)
    with pytest.raises(IncompatibleError, match="needs a teacher"):
        AT().prepare(s, None, INFO)
