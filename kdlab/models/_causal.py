"""Causal language models: the inputs they take and sampling with a KV cache (not a model).

A kdlab causal LM (``gpt``, ``hf-causal``) takes ``Batch.inputs`` = ``{"input_ids": [B, L],
"attention_mask": [B, L], "loss_mask": [B, L]}`` (or bare input ids ``[B, L]``) and returns
``Outputs(logits [B, L, V], features, mask=loss_mask)``: the logits at position ``t`` predict the
token at ``t + 1`` (the data was shifted once, by :func:`kdlab.data.text.causal_pairs`). It also has
``decode(ids [B, n], cache) -> (logits [B, n, V], cache)``, one step of incremental decoding, which
:func:`sample` uses.
"""
from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor, nn

TOKEN_INPUTS = "tokens"  # the ``kdlab_inputs`` attribute of a registered factory whose models take token ids


def token_inputs(x: Tensor | dict[str, Tensor]) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(input ids ``[B, L]``, attention mask or None, loss mask or None) from a model's input."""
    if isinstance(x, dict):
        return x["input_ids"].long(), x.get("attention_mask"), x.get("loss_mask")
    return x.long(), None, None


class CausalLM(Protocol):
    def decode(self, ids: Tensor, cache: Any) -> tuple[Tensor, Any]: ...


@torch.no_grad()
def sample(model: nn.Module, prompt: Tensor, new_tokens: int, generator: torch.Generator,
           temperature: float = 1.0, top_k: int = 0) -> Tensor:
    """Continue ``prompt`` ``[B, P]`` by ``new_tokens`` sampled tokens: ``[B, P + new_tokens]``.

    The prompt is encoded once, then each step feeds only the new token through the KV cache.
    Sampling draws from ``generator`` only, so the same generator state gives the same tokens.
    ``temperature`` 0 is greedy; ``top_k`` > 0 samples among the k most likely tokens.
    """
    was = model.training
    model.eval()
    dec = getattr(model, "decode", None)
    if dec is None:
        raise TypeError(f"{type(model).__name__} has no decode(ids, cache): it cannot generate")
    out = [prompt]
    logits, cache = dec(prompt, None)
    nxt = logits[:, -1]
    for i in range(new_tokens):
        tok = _pick(nxt.float(), generator, temperature, top_k)
        out.append(tok)
        if i + 1 < new_tokens:
            logits, cache = dec(tok, cache)
            nxt = logits[:, -1]
    model.train(was)
    return torch.cat(out, dim=1)


def _pick(logits: Tensor, generator: torch.Generator, temperature: float, top_k: int) -> Tensor:
    if temperature <= 0:
        return logits.argmax(-1, keepdim=True)
    z = logits / temperature
    if 0 < top_k < z.shape[-1]:
        kth = z.topk(top_k, dim=-1).values[:, -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    probs = torch.softmax(z, dim=-1)
    # multinomial on CPU with an explicit generator: a pure function of the generator's state
    return torch.multinomial(probs.cpu(), 1, generator=generator).to(logits.device)
