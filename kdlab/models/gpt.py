"""A small GPT (decoder-only transformer) for CPU work on token data."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.core import Outputs
from kdlab.models import register_model
from kdlab.models._causal import TOKEN_INPUTS, token_inputs

Cache = list[tuple[Tensor, Tensor]]


class Block(nn.Module):
    """Pre-norm block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, past: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x ``[B, n, D]`` (the n newest positions); past: keys/values ``[B, H, T, D/H]`` of earlier ones."""
        B, n, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, n, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        T = k.shape[2]
        if n == 1:  # one new token attends to everything before it
            a = F.scaled_dot_product_attention(q, k, v)
        elif T == n:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # n new positions after T - n cached ones
            allowed = torch.ones(n, T, dtype=torch.bool, device=x.device).tril(T - n)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, n, D)))
        x = x + self.drop(self.mlp(self.ln2(x)))
        return x, (k, v)


class GPT(nn.Module):
    """Token + learned position embeddings, ``layers`` pre-norm blocks, a final LayerNorm and an
    untied output head. Padding is on the right, so causal attention alone keeps real tokens from
    seeing it."""

    def __init__(self, vocab: int, layers: int = 4, width: int = 256, heads: int = 4, context: int = 256,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.vocab, self.context = vocab, context
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.drop = nn.Dropout(dropout)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by depth
            if name.endswith(("proj.weight", "mlp.2.weight")):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * layers))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def _run(self, ids: Tensor, cache: Cache | None) -> tuple[Tensor, Tensor, Cache]:
        start = 0 if not cache else cache[0][0].shape[2]
        n = ids.shape[1]
        if start + n > self.context:
            raise ValueError(f"sequence of {start + n} tokens is longer than the model's context {self.context}")
        pos = torch.arange(start, start + n, device=ids.device)
        h = self.drop(self.tok(ids) + self.pos(pos))
        new: Cache = []
        for i, block in enumerate(self.blocks):
            h, kv = block(h, None if not cache else cache[i])
            new.append(kv)
        h = self.ln_f(h)
        return self.head(h), h, new

    def forward(self, x: Tensor | dict[str, Tensor]) -> Outputs:
        """x: input ids ``[B, L]`` or the dict of :mod:`kdlab.models._causal` → logits ``[B, L, V]``
        (position t predicts token t + 1), features ``hidden`` ``[B, L, D]``, mask = ``loss_mask``."""
        ids, attn, loss_mask = token_inputs(x)
        logits, h, _ = self._run(ids, None)
        return Outputs(logits, {"hidden": h}, loss_mask if loss_mask is not None else attn)

    def decode(self, ids: Tensor, cache: Cache | None) -> tuple[Tensor, Cache]:
        """Incremental decoding: logits ``[B, n, V]`` of ``ids`` ``[B, n]`` after the cached positions."""
        logits, _, new = self._run(ids, cache)
        return logits, new


@register_model("gpt")
def gpt(num_classes: int, in_channels: int = 3, image_size: int = 32, layers: int = 4, width: int = 256,
        heads: int = 4, context: int = 256, dropout: float = 0.0) -> nn.Module:
    """``num_classes`` is the vocabulary size; ``in_channels``/``image_size`` are ignored (tokens)."""
    return GPT(num_classes, layers, width, heads, context, dropout)


setattr(gpt, "kdlab_inputs", TOKEN_INPUTS)
