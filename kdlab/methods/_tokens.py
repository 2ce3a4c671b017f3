"""Token-level divergences on ``[B, L, V]`` logits with a token mask (not a method).

Every token-level method (``fkl``, ``rkl``, ``jsd``, ``skl``, ``tv``) is a pure per-token divergence
``div(student_logits [N, V], teacher_logits [N, V]) -> [N]`` reduced here, the one way:

* the tokens kept are ``mask`` (``Outputs.mask`` of the student: the collator's loss mask, which
  excludes prompt tokens, padding and the last position, which has no next token). Logits and
  labels were shifted once, by :func:`kdlab.data.text.causal_pairs`; nothing here shifts.
* the loss is the mean over kept tokens (TRL's ``batchmean`` with labels: Σ over kept tokens of the
  per-token divergence / number of kept tokens), so padding never changes it.
* the sequence is processed in chunks of ``chunk`` positions, each under activation checkpointing
  when gradients are needed: the float32 probabilities of both models exist for one chunk at a
  time, in the forward and in the backward pass (recomputed there), never for the whole ``[B, L, V]``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from kdlab.core import Outputs

TokenDivergence = Callable[[Tensor, Tensor], Tensor]


def masked_token_mean(div: TokenDivergence, student_logits: Tensor, teacher_logits: Tensor,
                      mask: Tensor | None = None, chunk: int = 64) -> Tensor:
    """Mean of ``div`` over the kept tokens. Logits ``[B, L, V]`` (or ``[N, V]``), mask ``[B, L]``
    (or ``[N]``; None keeps every token). A batch with no kept token gives 0 (with a graph)."""
    s, t = student_logits, teacher_logits
    if s.shape != t.shape:
        raise ValueError(f"student logits {tuple(s.shape)} and teacher logits {tuple(t.shape)} differ")
    if s.dim() == 2:  # [N, V] rows: one position each
        s, t = s.unsqueeze(1), t.unsqueeze(1)
        mask = None if mask is None else mask.reshape(-1, 1)
    B, L, _ = s.shape
    keep = torch.ones(B, L, dtype=torch.bool, device=s.device) if mask is None else mask.reshape(B, L).bool()
    n = keep.sum()
    total = s.new_zeros((), dtype=torch.float32) + 0.0 * s.sum()  # keeps a graph when nothing is kept
    step = max(1, int(chunk))
    for i in range(0, L, step):
        k = keep[:, i:i + step]
        if not bool(k.any()):
            continue
        sc, tc = s[:, i:i + step], t[:, i:i + step]
        if sc.requires_grad and torch.is_grad_enabled():
            # recomputed in the backward pass: only this chunk's probabilities are ever alive
            part = checkpoint(_chunk_sum, div, sc, tc, k, use_reentrant=False)
        else:
            part = _chunk_sum(div, sc, tc, k)
        total = total + part
    return total / n.clamp_min(1).to(total.dtype)


def _chunk_sum(div: TokenDivergence, s: Tensor, t: Tensor, keep: Tensor) -> Tensor:
    """Σ over the kept positions of ``div`` (computed in float32) for one chunk ``[B, c, V]``."""
    rows = keep.reshape(-1)
    V = s.shape[-1]
    per = div(s.reshape(-1, V)[rows].float(), t.reshape(-1, V)[rows].float())
    return per.sum()


def log_probs(logits: Tensor, T: float) -> Tensor:
    """``log_softmax(logits / T)`` with ``-inf`` (a token a teacher rules out, e.g. a padded vocabulary
    entry) raised to the most negative finite float: ``0 · log 0`` terms then give 0, not NaN."""
    lp = torch.log_softmax(logits / T, dim=-1)
    return lp.clamp_min(torch.finfo(lp.dtype).min)


def token_mask(student: Outputs) -> Tensor | None:
    """The tokens a token-level loss uses: ``student.mask`` (None: all)."""
    return student.mask


def check_temperature(T: float) -> None:
    if T <= 0:
        raise ValueError(f"temperature T must be > 0, got {T}")
