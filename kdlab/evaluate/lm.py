"""Language-model metrics over a split of token sequences: next-token accuracy, NLL, perplexity."""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.core import Batch
from kdlab.data import Loader
from kdlab.models.contract import as_outputs


@torch.no_grad()
def token_metrics(logits_of: Callable[[Batch], Tensor], split: Any, batch_size: int = 64) -> dict[str, float]:
    """``logits_of(batch) -> [B, L, V]`` over every sequence of a :class:`kdlab.data.text.TokenSplit`
    → ``acc`` (next-token top-1), ``nll`` (nats per learned token), ``ppl`` = exp(nll), ``tokens``.
    Only tokens whose target is not -100 count (no prompt, no padding)."""
    nll = 0.0
    correct = n = 0
    for b in Loader(split, batch_size):
        z = logits_of(b).float()
        y = b.targets
        assert y is not None
        keep = y != -100
        z, y = z[keep], y[keep]
        nll += float(F.cross_entropy(z, y, reduction="sum"))
        correct += int((z.argmax(-1) == y).sum())
        n += int(keep.sum())
    mean = nll / max(n, 1)
    return {"acc": correct / max(n, 1), "nll": mean, "ppl": math.exp(min(mean, 50.0)), "tokens": float(n)}


def lm_evaluate(model: nn.Module, split: Any, batch_size: int = 64) -> dict[str, float]:
    """:func:`token_metrics` of a causal LM module (eval mode, restored after): the run lifecycle's
    ``evaluate`` for token models."""
    was = model.training
    model.eval()
    dev = next(model.parameters(), torch.empty(0)).device
    try:
        return token_metrics(lambda b: as_outputs(model(b.to(dev).inputs)).logits, split, batch_size)
    finally:
        model.train(was)
