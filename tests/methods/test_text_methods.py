"""Transformer methods: layer maps, masked losses pinned by hand, padding never contributes, training steps."""
import pytest
import torch

from kdlab.core import Batch, DataInfo
from kdlab.data import token_batch
from kdlab.errors import ConfigError, IncompatibleError
from kdlab.methods import create_method
from kdlab.methods._layers import layer_map, masked_mse
from kdlab.methods.embed import embed_loss
from kdlab.methods.pkd import pkd_loss
from kdlab.models import create_model


def test_layer_maps():
    assert layer_map(3, 6, "uniform") == [(0, 0), (1, 2), (2, 4), (3, 6)]
    assert layer_map(3, 6, "skip") == [(1, 2), (2, 4)]
    assert layer_map(3, 6, "last") == [(1, 4), (2, 5)]
    assert layer_map(2, 6, "uniform") == [(0, 0), (1, 3), (2, 6)]
    with pytest.raises(ConfigError, match="not one of uniform, skip, last"):
        layer_map(2, 6, "middle")
    with pytest.raises(IncompatibleError):
        layer_map(4, 2)


def test_masked_mse_pinned_and_blind_to_padding():
    s = torch.tensor([[[1.0, 1.0], [2.0, 0.0], [50.0, -50.0]]])
    t = torch.zeros(1, 3, 2)
    # real tokens 0, 1: squared errors 1 + 1 + 4 + 0 = 6 over 2 tokens × 2 dims
    assert masked_mse(s, t, torch.tensor([[1, 1, 0]])).item() == pytest.approx(1.5)


def test_embed_loss_pinned():
    s, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    # MSE (1 + 4) / 2 = 2.5; cosine 0 → 1 − 0 = 1
    assert embed_loss(s, t).item() == pytest.approx(3.5)
    assert embed_loss(s, t, mse=0.0, cosine=2.0).item() == pytest.approx(2.0)


def test_pkd_loss_pinned():
    s = [torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0]])]
    t = [torch.tensor([[6.0, 8.0]]), torch.tensor([[0.0, 5.0]])]
    # layer 1: same direction → 0; layer 2: (1, 0) vs (0, 1) → 1 + 1 = 2
    assert pkd_loss(s, t).item() == pytest.approx(2.0)


def _pair():
    torch.manual_seed(0)
    t = create_model("text-transformer", 3, vocab_size=20, layers=4, hidden=16, heads=2).eval()
    s = create_model("text-transformer", 3, vocab_size=20, layers=2, hidden=8, heads=2).eval()
    return s, t


@pytest.mark.parametrize("name,opts", [("hidden", {"layer_map": "uniform"}), ("hidden", {"layer_map": "last"}),
                                       ("embed", {}), ("pkd", {"layer_map": "last"})])
def test_padding_never_contributes_to_the_loss(name, opts):
    s, t = _pair()
    rows = torch.tensor([[2, 5, 6, 7, 3, 0], [2, 9, 3, 0, 0, 0]])
    tight = token_batch(rows, 0)
    loose = {k: torch.cat([v, torch.zeros(2, 4, dtype=torch.long)], 1) for k, v in tight.items()}
    m = create_method(name, **opts)
    with torch.no_grad():
        m.prepare(s(tight), t(tight), DataInfo(3, 2, (6,)))
        a = m(s(tight), t(tight), Batch(tight))
        b = m(s(loose), t(loose), Batch(loose))
    assert a and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_hidden_trains_its_projections_and_refuses_other_tokens():
    s, t = _pair()
    s.train()
    x = token_batch(torch.tensor([[2, 5, 6, 7, 3], [2, 9, 3, 0, 0]]), 0)
    m = create_method("hidden")
    m.prepare(s(x), t(x), DataInfo(3, 2, (5,)))
    assert len(m.proj) == 3 and m.proj[0].in_features == 8 and m.proj[0].out_features == 16
    loss = m(s(x), t(x), Batch(x))["hidden"]
    loss.backward()
    assert m.proj[0].weight.grad is not None and s.encoder.embeddings.word_embeddings.weight.grad is not None
    other = token_batch(torch.tensor([[2, 5, 3]]), 0)
    with pytest.raises(IncompatibleError, match="same tokens on both sides"):
        create_method("hidden").prepare(s(x), t(other), DataInfo(3, 2, (5,)))
