import math

import numpy as np
import pytest
import torch

from kdlab.core import Batch, Outputs
from kdlab.methods import create_method
from kdlab.methods.pkt import cosine_conditional, pkt_loss
from tests.methods._method_checks import check_gradients, frozen, leaf

FS = [[1.0, 0.0, 2.0], [0.5, -1.0, 0.0], [2.0, 1.0, 1.0], [-1.0, 0.5, 0.5]]
FT = [[0.0, 1.0], [1.0, 1.5], [2.0, -1.0], [-0.5, -0.5]]


def _reference(s, t, eps=1e-7):
    B = len(s)

    def cond(f):
        f = np.array(f, dtype=np.float64)
        k = np.array([[(1 + f[i] @ f[j] / (np.linalg.norm(f[i]) * np.linalg.norm(f[j]))) / 2 for j in range(B)]
                      for i in range(B)])
        return k / k.sum(1, keepdims=True)

    ps, pt = cond(s), cond(t)
    return sum(pt[i, j] * math.log((pt[i, j] + eps) / (ps[i, j] + eps)) for i in range(B) for j in range(B)) / B**2


def test_pinned_against_the_paper_definition():
    s, t = torch.tensor(FS, dtype=torch.float64), torch.tensor(FT, dtype=torch.float64)
    assert pkt_loss(s, t).item() == pytest.approx(_reference(FS, FT), rel=1e-6)
    m = create_method("pkt")
    got = m(Outputs(torch.zeros(4, 2), {"pooled": torch.tensor(FS)}),
            Outputs(torch.zeros(4, 2), {"pooled": torch.tensor(FT)}),
            Batch(torch.zeros(4, 1)))["pkt"]
    assert got.item() == pytest.approx(30000 * _reference(FS, FT), rel=1e-4)


def test_invariants():
    s, t = torch.tensor(FS, dtype=torch.float64), torch.tensor(FT, dtype=torch.float64)
    p = cosine_conditional(s)
    assert torch.allclose(p.sum(1), torch.ones(4, dtype=torch.float64))
    assert pkt_loss(s.clone(), s).item() == pytest.approx(0, abs=1e-15)
    assert pkt_loss(4.0 * s, t).item() == pytest.approx(pkt_loss(s, t).item(), rel=1e-7)  # cosine kernel: scale-free
    assert pkt_loss(s, t).item() > 0 and pkt_loss(t, s).item() > 0  # a KL: non-negative, not symmetric


def test_gradients_reach_student_not_teacher():
    torch.manual_seed(0)
    s = Outputs(frozen(torch.randn(6, 3)), {"pooled": leaf(torch.randn(6, 8))})
    t = Outputs(frozen(torch.randn(6, 3)), {"pooled": frozen(torch.randn(6, 16))})
    check_gradients(create_method("pkt"), s, t, Batch(torch.zeros(6, 1)))
