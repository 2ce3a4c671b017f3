import math

import numpy as np
import pytest
import torch

from kdlab.core import Batch, DataInfo, Outputs
from kdlab.errors import IncompatibleError
from kdlab.methods import create_method
from kdlab.methods.crd import nce_loss
from tests.methods._method_checks import check_connectors_train, check_gradients, frozen, leaf


def _nce_numpy(p, n_data, eps=1e-7):
    """Tian et al. Eq. (18): h(x) = P(x) / (P(x) + m * Pn), positives log h, negatives log(1 - h)."""
    b, k1 = p.shape
    m, pn = k1 - 1, 1.0 / n_data
    tot = 0.0
    for i in range(b):
        tot += math.log(p[i, 0] / (p[i, 0] + m * pn + eps))
        for j in range(1, k1):
            tot += math.log(m * pn / (p[i, j] + m * pn + eps))
    return -tot / b


def test_nce_loss_pinned_and_monotone():
    p = np.array([[0.9, 0.1, 0.3, 0.05], [0.2, 0.4, 0.01, 0.7]])
    assert nce_loss(torch.tensor(p), 50).item() == pytest.approx(_nce_numpy(p, 50), rel=1e-12)
    up_pos, up_neg = p.copy(), p.copy()
    up_pos[:, 0] *= 2
    up_neg[:, 1:] *= 2
    assert nce_loss(torch.tensor(up_pos), 50) < nce_loss(torch.tensor(p), 50) < nce_loss(torch.tensor(up_neg), 50)


def _outs(n=4, ds=6, dt=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = Outputs(frozen(torch.randn(n, 3, generator=g)), {"pooled": leaf(torch.randn(n, ds, generator=g))})
    t = Outputs(frozen(torch.randn(n, 3, generator=g)), {"pooled": frozen(torch.randn(n, dt, generator=g))})
    return s, t


def test_bank_loss_pinned_with_fixed_negatives():
    torch.manual_seed(0)
    s, t = _outs()
    m = create_method("crd", feat_dim=5, nce_k=3).double()
    m.prepare(Outputs(s.logits.double(), {"pooled": s.features["pooled"].double()}),
              Outputs(t.logits.double(), {"pooled": t.features["pooled"].double()}), DataInfo(3, 20, (1,)))
    m.memory_s, m.memory_t = m.memory_s.double(), m.memory_t.double()
    neg = torch.tensor([[1, 2, 3], [0, 0, 9], [19, 4, 5], [6, 7, 8]])
    m._negatives = lambda index: neg
    index = torch.tensor([10, 11, 12, 13])
    fs, ft = s.features["pooled"].double(), t.features["pooled"].double()
    # expected, by hand
    Ws, bs = m.embed_s.weight.detach().numpy(), m.embed_s.bias.detach().numpy()
    Wt, bt = m.embed_t.weight.detach().numpy(), m.embed_t.bias.detach().numpy()
    es = fs.detach().numpy() @ Ws.T + bs
    es /= np.linalg.norm(es, axis=1, keepdims=True)
    et = ft.numpy() @ Wt.T + bt
    et /= np.linalg.norm(et, axis=1, keepdims=True)
    mem_s, mem_t = m.memory_s.numpy().copy(), m.memory_t.numpy().copy()
    cand = np.concatenate([index.numpy()[:, None], neg.numpy()], 1)
    out_s = np.array([[math.exp(es[b] @ mem_t[c] / 0.07) for c in cand[b]] for b in range(4)])
    out_t = np.array([[math.exp(et[b] @ mem_s[c] / 0.07) for c in cand[b]] for b in range(4)])
    zs, zt = out_s.mean() * 20, out_t.mean() * 20
    want = 0.8 * (_nce_numpy(out_s / zs, 20) + _nce_numpy(out_t / zt, 20))
    got = m(Outputs(s.logits, {"pooled": fs}), Outputs(t.logits, {"pooled": ft}),
            Batch(torch.zeros(4, 1), index=index))["crd"]
    assert got.item() == pytest.approx(want, rel=1e-9)
    assert m.z_s.item() == pytest.approx(zs) and m.z_t.item() == pytest.approx(zt)
    # momentum update of the sampled rows (written before the next forward), others untouched
    assert np.array_equal(m.memory_s.numpy(), mem_s)
    got.backward()
    m.flush_updates()
    new_s = 0.5 * mem_s[10:14] + 0.5 * es
    new_s /= np.linalg.norm(new_s, axis=1, keepdims=True)
    assert np.allclose(m.memory_s.numpy()[10:14], new_s)
    assert np.allclose(m.memory_s.numpy()[:10], mem_s[:10])
    new_t = 0.5 * mem_t[10:14] + 0.5 * et
    assert np.allclose(m.memory_t.numpy()[10:14], new_t / np.linalg.norm(new_t, axis=1, keepdims=True))
    # Z is fixed after the first batch
    m(Outputs(s.logits, {"pooled": fs}), Outputs(t.logits, {"pooled": ft}), Batch(torch.zeros(4, 1), index=index))
    assert m.z_s.item() == pytest.approx(zs)


def test_negatives_clip_exclude_self_and_bank_shape():
    s, t = _outs()
    m = create_method("crd")
    m.prepare(s, t, DataInfo(3, 10, (1,)))
    assert m.k == 9 and m.memory_s.shape == (10, 128) and m.memory_t.shape == (10, 128)
    index = torch.tensor([0, 3, 9, 5])
    neg = m._negatives(index)
    assert neg.shape == (4, 9) and (neg != index[:, None]).all() and neg.min() >= 0 and neg.max() <= 9
    assert set(m.state_dict()) >= {"memory_s", "memory_t", "z_s", "z_t", "embed_s.weight", "embed_t.weight"}
    big = create_method("crd", nce_k=5)
    big.prepare(s, t, DataInfo(3, 1000, (1,)))
    assert big.k == 5


def test_incompatibilities():
    s, t = _outs()
    m = create_method("crd")
    m.prepare(s, t, DataInfo(3, 10, (1,)))
    with pytest.raises(IncompatibleError, match="index"):
        m(s, t, Batch(torch.zeros(4, 1)))
    with pytest.raises(IncompatibleError, match="out of range"):
        m(s, t, Batch(torch.zeros(4, 1), index=torch.tensor([0, 1, 2, 10])))
    with pytest.raises(IncompatibleError, match="pooled"):
        create_method("crd").prepare(Outputs(torch.zeros(2, 3)), t, DataInfo(3, 10, (1,)))
    with pytest.raises(IncompatibleError):
        create_method("crd").prepare(s, t, DataInfo(3, 1, (1,)))


def test_queue_mode_needs_no_index_and_is_fifo():
    torch.manual_seed(0)
    s, t = _outs()
    m = create_method("crd", queue_size=6, feat_dim=8)
    m.prepare(s, t, DataInfo(3, 10**7, (1,)))
    assert m.k == 6 and not hasattr(m, "memory_s")
    q_t = m.queue_t.clone()
    es, et = m.embed(s.features["pooled"], t.features["pooled"])
    got = m(s, t, Batch(torch.zeros(4, 1)))["crd"]
    # expected: positive = the other side's current embedding, negatives = the queue
    pos = (es * et).sum(1, keepdim=True)
    out_s = torch.exp(torch.cat([pos, es @ q_t.t()], 1) / 0.07)
    assert torch.isfinite(got)
    assert m.z_s.item() == pytest.approx(out_s.mean().item() * 10**7, rel=1e-5)
    m.flush_updates()
    assert int(m.queue_ptr) == 4
    assert torch.allclose(m.queue_t[:4], et.detach()) and torch.allclose(m.queue_s[:4], es.detach())
    assert torch.allclose(m.queue_t[4:], q_t[4:])
    m(s, t, Batch(torch.zeros(4, 1)))  # wraps around: rows 4, 5, 0, 1
    m.flush_updates()
    assert int(m.queue_ptr) == 2
    assert torch.allclose(m.queue_t[[4, 5, 0, 1]], et.detach(), atol=1e-6)
    m.eval()
    m(s, t, Batch(torch.zeros(4, 1)))  # no update outside training
    m.flush_updates()
    assert int(m.queue_ptr) == 2


@pytest.mark.parametrize("queue_size", [None, 3])
def test_training_steps_backward_then_update(queue_size):
    torch.manual_seed(0)
    s, t = _outs(n=4)
    m = create_method("crd", nce_k=4, queue_size=queue_size)
    m.prepare(s, t, DataInfo(3, 30, (1,)))
    batch = Batch(torch.zeros(4, 1), index=torch.tensor([1, 5, 9, 29]))
    before = {k: v.clone() for k, v in m.named_buffers()}
    for _ in range(3):  # forward/backward pairs as the engine runs them; the memory moves between steps
        m(s, t, batch)["crd"].backward()
    changed = [k for k, v in m.named_buffers() if k.startswith(("memory", "queue")) and not torch.equal(v, before[k])]
    assert changed
    state = m.state_dict()  # saving writes the pending update first
    assert m._pending is None and set(before) <= set(state)


@pytest.mark.parametrize("queue_size", [None, 8])
def test_gradients_reach_student_and_both_heads_not_teacher(queue_size):
    torch.manual_seed(0)
    s, t = _outs(n=6)
    m = create_method("crd", nce_k=5, queue_size=queue_size)
    m.prepare(s, t, DataInfo(3, 50, (1,)))
    check_gradients(m, s, t, Batch(torch.zeros(6, 1), index=torch.arange(6) * 7))
    check_connectors_train(m)
    for name, b in m.named_buffers():
        assert not b.requires_grad, name
