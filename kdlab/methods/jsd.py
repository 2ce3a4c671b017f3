"""Generalised Jensen–Shannon divergence on tokens with mixing weight β (GKD)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from kdlab.core import Batch, Method, Outputs
from kdlab.methods import register_method
from kdlab.methods._tokens import check_temperature, log_probs, masked_token_mean, token_mask


def generalized_jsd(student_logits: Tensor, teacher_logits: Tensor, beta: float = 0.5, T: float = 1.0) -> Tensor:
    """Per-token JSD(β), TRL's definition: logits ``[N, V]`` → ``[N]`` (nats).

    With M = β·p_T + (1 − β)·p_S (both at temperature T):
    JSD(β) = β·KL(p_T ‖ M) + (1 − β)·KL(p_S ‖ M). The endpoints are defined as in TRL (the mixture
    form is 0 there): β = 0 is the forward KL(p_T ‖ p_S), β = 1 the reverse KL(p_S ‖ p_T).
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    s, t = log_probs(student_logits, T), log_probs(teacher_logits, T)
    if beta == 0.0:
        return (t.exp() * (t - s)).sum(-1)
    if beta == 1.0:
        return (s.exp() * (s - t)).sum(-1)
    m = torch.logsumexp(torch.stack([s + math.log1p(-beta), t + math.log(beta)]), dim=0)
    return beta * (t.exp() * (t - m)).sum(-1) + (1 - beta) * (s.exp() * (s - m)).sum(-1)


@register_method("jsd")
class GeneralizedJSD(Method):
    """On-Policy Distillation of Language Models: Learning from Self-Generated Mistakes (Agarwal et
    al., ICLR 2024) — the generalised JSD of GKD.

    loss = weight · mean over kept tokens of JSD(β) between p_T and p_S at temperature T, the
    definition of TRL's ``GKDTrainer.generalized_jsd_loss`` (β = 0: forward KL, β = 1: reverse KL;
    no T² factor). Logits ``[B, L, V]`` with ``student.mask``; on-policy batches come from the
    ``lm-distill`` scheme (``scheme.lmbda``), not from the loss.
    """

    paper_ce = 0.0

    def __init__(self, beta: float = 0.5, T: float = 1.0, weight: float = 1.0, chunk: int = 64) -> None:
        super().__init__()
        check_temperature(T)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        self.beta, self.T, self.weight, self.chunk = beta, T, weight, chunk

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert teacher is not None
        beta, T = self.beta, self.T
        loss = masked_token_mean(lambda s, t: generalized_jsd(s, t, beta, T), student.logits, teacher.logits,
                                 token_mask(student), self.chunk)
        return {"jsd": self.weight * loss}
