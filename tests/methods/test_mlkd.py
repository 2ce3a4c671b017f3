import numpy as np
import pytest
import torch

from kdlab.core import Batch, Outputs
from kdlab.methods import create_method
from kdlab.methods.mlkd import batch_level, class_level, instance_level, mlkd_terms
from tests.methods._method_checks import check_gradients, frozen, leaf

S = [[2.0, -1.0, 0.5, 0.0], [0.3, 0.2, -0.7, 1.5], [-1.0, 2.5, 0.0, 0.4]]
TT = [[3.0, 0.0, 1.0, -1.0], [0.0, 1.0, -2.0, 2.0], [0.5, 3.0, -1.0, 0.0]]
BATCH = Batch(torch.zeros(3, 1))


def _p(rows, T):
    out = []
    for r in rows:
        e = np.exp(np.array(r, dtype=np.float64) / T)
        out.append(e / e.sum())
    return out


def _reference(s, t, temps):
    """Jin et al.: instance KL, batch Gram and class correlation, written with explicit sums."""
    B, C = len(s), len(s[0])
    inst = bat = cls = 0.0
    for T in temps:
        ps, pt = _p(s, T), _p(t, T)
        inst += T * T * sum(sum(pt[b][c] * np.log(pt[b][c] / ps[b][c]) for c in range(C)) for b in range(B)) / B
        for i in range(B):
            for j in range(B):
                gs = sum(ps[i][c] * ps[j][c] for c in range(C))
                gt = sum(pt[i][c] * pt[j][c] for c in range(C))
                bat += (gt - gs) ** 2 / B
        for a in range(C):
            for b in range(C):
                ms = sum(ps[i][a] * ps[i][b] for i in range(B))
                mt = sum(pt[i][a] * pt[i][b] for i in range(B))
                cls += (mt - ms) ** 2 / C
    return inst, bat, cls


def test_pinned_against_explicit_sums():
    s, t = torch.tensor(S, dtype=torch.float64), torch.tensor(TT, dtype=torch.float64)
    temps = (2.0, 3.0, 4.0, 5.0, 6.0)
    want = _reference(S, TT, temps)
    got = mlkd_terms(s, t, temps)
    for g, w in zip(got, want):
        assert g.item() == pytest.approx(w, rel=1e-10)
    terms = create_method("mlkd").double()(Outputs(s), Outputs(t), BATCH)
    assert terms["mlkd_instance"].item() == pytest.approx(want[0], rel=1e-10)
    assert terms["mlkd_batch"].item() == pytest.approx(want[1], rel=1e-10)
    assert terms["mlkd_class"].item() == pytest.approx(want[2], rel=1e-10)


def test_invariants():
    s, t = torch.tensor(S, dtype=torch.float64), torch.tensor(TT, dtype=torch.float64)
    for term in mlkd_terms(t.clone(), t):
        assert term.item() == pytest.approx(0, abs=1e-12)
    for f in (batch_level, class_level):  # squared Frobenius distances are symmetric
        assert f(s, t, 3.0).item() == pytest.approx(f(t, s, 3.0).item(), rel=1e-12)
    for T in (2.0, 6.0):
        assert instance_level(s, t, T).item() == pytest.approx(T * T * instance_level(s / T, t / T, 1.0).item(),
                                                               rel=1e-10)
    perm = torch.tensor([2, 0, 1])  # relations do not depend on the order of the batch
    assert class_level(s[perm], t[perm], 4.0).item() == pytest.approx(class_level(s, t, 4.0).item(), rel=1e-12)
    assert batch_level(s[perm], t[perm], 4.0).item() == pytest.approx(batch_level(s, t, 4.0).item(), rel=1e-12)


def test_weights_switches_and_tokens():
    from kdlab.methods._logitstd import standardize

    s, t = torch.tensor(S), torch.tensor(TT)
    m = create_method("mlkd", temperatures=[4.0], w_instance=2.0, w_batch=0.0, w_class=3.0, weight=0.5)
    terms = m(Outputs(s), Outputs(t), BATCH)
    assert set(terms) == {"mlkd_instance", "mlkd_class"}
    assert terms["mlkd_instance"].item() == pytest.approx(instance_level(s, t, 4.0).item(), rel=1e-6)
    assert terms["mlkd_class"].item() == pytest.approx(1.5 * class_level(s, t, 4.0).item(), rel=1e-6)
    ls = create_method("mlkd", logit_stand=True, temperatures=[2.0])(Outputs(s), Outputs(t), BATCH)
    assert ls["mlkd_instance"].item() == pytest.approx(instance_level(standardize(s), standardize(t), 2.0).item(),
                                                       rel=1e-6)
    assert ls["mlkd_batch"].item() == pytest.approx(batch_level(s, t, 2.0).item(), rel=1e-6)  # raw logits
    mask = torch.tensor([[1, 1, 0], [0, 1, 0]], dtype=torch.bool)
    st, tt = torch.stack([s, s.flip(0)]), torch.stack([t, t.flip(0)])
    full = create_method("mlkd")
    tok = full(Outputs(st, mask=mask), Outputs(tt, mask=mask), BATCH)
    flat = full(Outputs(s[[0, 1, 1]]), Outputs(t[[0, 1, 1]]), BATCH)
    for k in flat:
        assert tok[k].item() == pytest.approx(flat[k].item(), rel=1e-5)
    with pytest.raises(Exception):
        create_method("mlkd", temperatures=[])


def test_gradients_reach_student_not_teacher():
    torch.manual_seed(0)
    check_gradients(create_method("mlkd"), Outputs(leaf(torch.randn(6, 5))), Outputs(frozen(torch.randn(6, 5))),
                    Batch(torch.zeros(6, 1)))
