import math

import numpy as np
import pytest
import torch

from kdlab.core import Batch, DataInfo, Outputs
from kdlab.errors import IncompatibleError
from kdlab.methods import hyperparameters, paper
from kdlab.methods.nst import NST, nst_loss

INFO = DataInfo(num_classes=10, num_train=100, input_shape=(3, 32, 32))


def pair(s_shapes, t_shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = {k: torch.randn(*v, generator=g).relu().requires_grad_() for k, v in s_shapes.items()}
    t = {k: torch.randn(*v, generator=g).relu() for k, v in t_shapes.items()}
    b = next(iter(s.values())).shape[0]
    return Outputs(torch.zeros(b, 10), s), Outputs(torch.zeros(b, 10), t)


def ref_mmd2(fs, ft, d=2, c=0.0):
    """MMD² = 1/N² ΣΣ k(s,s') + 1/M² ΣΣ k(t,t') − 2/(NM) ΣΣ k(s,t), per sample, batch-averaged."""
    fs, ft = np.asarray(fs, dtype=np.float64), np.asarray(ft, dtype=np.float64)

    def rows(f, b):
        out = []
        for ch in range(f.shape[1]):
            v = [f[b, ch, i, j] for i in range(f.shape[2]) for j in range(f.shape[3])]
            n = max(math.sqrt(sum(x * x for x in v)), 1e-12)  # an all-zero channel stays zero
            out.append([x / n for x in v])
        return out

    def k(x, y):
        return (sum(p * q for p, q in zip(x, y)) + c) ** d

    total = 0.0
    for b in range(fs.shape[0]):
        S, T = rows(fs, b), rows(ft, b)
        ss = sum(k(x, y) for x in S for y in S) / len(S) ** 2
        tt = sum(k(x, y) for x in T for y in T) / len(T) ** 2
        st = sum(k(x, y) for x in S for y in T) / (len(S) * len(T))
        total += ss + tt - 2 * st
    return total / fs.shape[0]


def test_defaults_and_paper():
    assert hyperparameters("nst") == {"weight": 50.0, "degree": 2, "c": 0.0, "layers": None}
    assert paper("nst").startswith("Like What You Like")


@pytest.mark.parametrize("d,c", [(2, 0.0), (3, 1.0), (1, 0.0)])
def test_pinned_value_against_explicit_loop(d, c):
    g = torch.Generator().manual_seed(7)
    fs, ft = torch.randn(2, 3, 2, 3, generator=g), torch.randn(2, 4, 2, 3, generator=g)
    assert nst_loss(fs, ft, d, c).item() == pytest.approx(ref_mmd2(fs.numpy(), ft.numpy(), d, c), rel=1e-5, abs=1e-7)


def test_pinned_hand_value():
    # one student channel on pixel 0, one teacher channel on pixel 1: k(s,s)=k(t,t)=1, k(s,t)=0 -> 2
    fs, ft = torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 1, 2)
    fs[..., 0] = 2.0
    ft[..., 1] = 5.0
    assert nst_loss(fs, ft).item() == pytest.approx(2.0)


def test_invariants():
    g = torch.Generator().manual_seed(8)
    a, b = torch.randn(2, 4, 3, 3, generator=g).relu(), torch.randn(2, 6, 3, 3, generator=g).relu()
    assert nst_loss(a, a.clone()).item() == pytest.approx(0.0, abs=1e-6)
    base = nst_loss(a, b).item()
    assert base > 0
    scale = torch.tensor([0.5, 2.0, 3.0, 7.0]).view(1, 4, 1, 1)
    assert nst_loss(a * scale, b).item() == pytest.approx(base, rel=1e-5)  # per-channel scale
    assert nst_loss(a[:, [2, 0, 3, 1]], b).item() == pytest.approx(base, rel=1e-5)  # channel order
    assert nst_loss(torch.cat([a, a], 1), b).item() == pytest.approx(base, rel=1e-5)  # same distribution
    assert nst_loss(b, a).item() == pytest.approx(base, rel=1e-5)  # symmetric


def test_method_value_and_spatial_pooling():
    s, t = pair({"layer1": (2, 3, 4, 4)}, {"layer1": (2, 5, 2, 2)})
    m = NST(weight=3.0)
    m.prepare(s, t, INFO)
    got = m(s, t, Batch(torch.zeros(2)))["nst"].item()
    pooled = s.features["layer1"].detach().reshape(2, 3, 2, 2, 2, 2).mean((3, 5))
    assert got == pytest.approx(3.0 * ref_mmd2(pooled.numpy(), t.features["layer1"].numpy()), rel=1e-5)


def test_gradients_reach_student_teacher_untouched():
    s, t = pair({"layer1": (2, 3, 7, 7), "layer2": (2, 6, 4, 4)}, {"layer1": (2, 5, 8, 8), "layer2": (2, 7, 4, 4)})
    before = {k: v.clone() for k, v in t.features.items()}
    m = NST()
    m.prepare(s, t, INFO)
    m(s, t, Batch(torch.zeros(2)))["nst"].backward()
    for k in ("layer1", "layer2"):
        assert s.features[k].grad is not None and s.features[k].grad.abs().sum() > 0
    for k, v in t.features.items():
        assert torch.equal(v, before[k]) and not v.requires_grad and v.grad is None


def test_incompatible_two_d_student():
    s, t = pair({"layer1": (2, 32)}, {"layer1": (2, 8, 8, 8)})
    with pytest.raises(IncompatibleError, match=r"NST .*'layer1'.*\(2, 32\).*\(2, 8, 8, 8\)"):
        NST().prepare(s, t, INFO)
