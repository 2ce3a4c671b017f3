import math

import numpy as np
import pytest
import torch

from kdlab.core import Batch, DataInfo, Outputs
from kdlab.errors import IncompatibleError
from kdlab.methods import create_method
from kdlab.methods.sp import sp_loss
from tests.methods._method_checks import check_gradients, frozen, leaf

INFO = DataInfo(3, 10, (3, 8, 8))


def _reference(fs, ft):
    """Tung & Mori Eq. (2)-(4) with explicit loops."""
    B = fs.shape[0]

    def g(f):
        q = f.reshape(B, -1)
        G = np.array([[float(q[i] @ q[j]) for j in range(B)] for i in range(B)])
        return np.array([G[i] / math.sqrt((G[i] ** 2).sum()) for i in range(B)])

    d = g(ft) - g(fs)
    return sum(d[i, j] ** 2 for i in range(B) for j in range(B)) / B**2


def test_pinned_against_the_paper_definition():
    rng = np.random.default_rng(0)
    fs, ft = rng.random((3, 2, 2, 2)), rng.random((3, 5, 1, 1))  # channel and spatial sizes differ
    got = sp_loss(torch.tensor(fs), torch.tensor(ft)).item()
    assert got == pytest.approx(_reference(fs, ft), rel=1e-10)


def test_invariants():
    torch.manual_seed(0)
    fs, ft = torch.randn(5, 4, 3, 3, dtype=torch.float64), torch.randn(5, 8, 2, 2, dtype=torch.float64)
    assert sp_loss(ft.clone(), ft).item() == pytest.approx(0, abs=1e-14)
    assert sp_loss(fs, ft).item() == pytest.approx(sp_loss(ft, fs).item(), rel=1e-12)  # symmetric
    assert sp_loss(7.0 * fs, ft).item() == pytest.approx(sp_loss(fs, ft).item(), rel=1e-10)  # scale-free
    perm = torch.randperm(4)  # channel order does not matter
    assert sp_loss(fs[:, perm], ft).item() == pytest.approx(sp_loss(fs, ft).item(), rel=1e-10)


def _outs(s_layers, t_layers):
    s = Outputs(torch.zeros(4, 3), {f"layer{i + 1}": leaf(x) for i, x in enumerate(s_layers)})
    t = Outputs(torch.zeros(4, 3), {f"layer{i + 1}": frozen(x) for i, x in enumerate(t_layers)})
    return s, t


def test_uses_each_sides_last_stage_and_weight():
    torch.manual_seed(1)
    sl = [torch.randn(4, 2, 4, 4), torch.randn(4, 4, 2, 2)]
    tl = [torch.randn(4, 3, 8, 8), torch.randn(4, 6, 4, 4), torch.randn(4, 12, 2, 2)]
    s, t = _outs(sl, tl)
    s.features["layer2_preact"] = torch.randn(4, 4, 2, 2)
    s.features["pooled"] = torch.randn(4, 4)
    m = create_method("sp")
    m.prepare(s, t, INFO)
    assert m.pair == ("layer2", "layer3")
    got = m(s, t, Batch(torch.zeros(4, 1)))["sp"]
    assert got.item() == pytest.approx(3000 * sp_loss(sl[1], tl[2]).item(), rel=1e-6)
    m2 = create_method("sp", layer="layer1:layer2", weight=1.0)
    m2.prepare(s, t, INFO)
    assert m2(s, t, Batch(torch.zeros(4, 1)))["sp"].item() == pytest.approx(sp_loss(sl[0], tl[1]).item(), rel=1e-6)


def test_incompatible_without_stage_features():
    m = create_method("sp")
    with pytest.raises(IncompatibleError):
        m.prepare(Outputs(torch.zeros(2, 3), {"pooled": torch.zeros(2, 4)}),
                  Outputs(torch.zeros(2, 3), {"pooled": torch.zeros(2, 4)}), INFO)
    with pytest.raises(IncompatibleError):
        m.prepare(Outputs(torch.zeros(2, 3), {"layer1": torch.zeros(2, 4)}), None, INFO)


def test_gradients_reach_student_not_teacher():
    torch.manual_seed(0)
    s, t = _outs([torch.randn(6, 4, 4, 4), torch.randn(6, 8, 2, 2)], [torch.randn(6, 16, 2, 2)])
    m = create_method("sp")
    m.prepare(s, t, INFO)
    s.features["layer1"].requires_grad_(False)  # only the compared stage gets a gradient
    check_gradients(m, s, t, Batch(torch.zeros(6, 1)))
