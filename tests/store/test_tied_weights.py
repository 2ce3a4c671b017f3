"""A module with tied parameters (a language model's input and output embeddings) saves and loads."""
from __future__ import annotations

import torch
from torch import nn

from kdlab.store.checkpoint import load_weights, save_weights


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(7, 3)
        self.head = nn.Linear(3, 7, bias=False)
        self.head.weight = self.emb.weight


def test_tied_parameters_round_trip(tmp_path):
    torch.manual_seed(0)
    m = Tied()
    save_weights(tmp_path / "w", m, {"note": "tied"})
    state, meta = load_weights(tmp_path / "w")
    assert meta["note"] == "tied" and torch.equal(state["emb.weight"], state["head.weight"])
    fresh = Tied()
    fresh.load_state_dict(state)
    assert fresh.head.weight is fresh.emb.weight and torch.equal(fresh.emb.weight, m.emb.weight)
