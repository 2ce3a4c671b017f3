"""Skew KL on tokens: KL(p_T ‖ α·p_T + (1 − α)·p_S) (DistiLLM)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from kdlab.core import Batch, Method, Outputs
from kdlab.methods import register_method
from kdlab.methods._tokens import check_temperature, log_probs, masked_token_mean, token_mask


def skew_kl(student_logits: Tensor, teacher_logits: Tensor, alpha: float = 0.1, T: float = 1.0,
            reverse: bool = False) -> Tensor:
    """Per-token skew KL: logits ``[N, V]`` → ``[N]`` (nats).

    Forward (default): KL(p_T ‖ α·p_T + (1 − α)·p_S). ``reverse``: KL(p_S ‖ α·p_S + (1 − α)·p_T).
    α = 0 is the plain forward (reverse) KL; the mixture keeps the divergence finite where the
    student gives a token ~0 probability.
    """
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    s, t = log_probs(student_logits, T), log_probs(teacher_logits, T)
    p, q = (s, t) if reverse else (t, s)
    if alpha == 0.0:
        mix = q
    else:
        mix = torch.logsumexp(torch.stack([p + math.log(alpha), q + math.log1p(-alpha)]), dim=0)
    return (p.exp() * (p - mix)).sum(-1)


@register_method("skl")
class SkewKL(Method):
    """DistiLLM: Towards Streamlined Distillation for Large Language Models (Ko, Kim, Chen, Yun;
    ICML 2024).

    loss = weight · mean over kept tokens of the skew KL KL(p_T ‖ α·p_T + (1 − α)·p_S) (``reverse``:
    the skew reverse KL KL(p_S ‖ α·p_S + (1 − α)·p_T)), α = 0.1 as in the paper. Logits
    ``[B, L, V]`` with ``student.mask``.
    """

    paper_ce = 0.0

    def __init__(self, alpha: float = 0.1, T: float = 1.0, reverse: bool = False, weight: float = 1.0,
                 chunk: int = 64) -> None:
        super().__init__()
        check_temperature(T)
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got {alpha}")
        self.alpha, self.T, self.reverse, self.weight, self.chunk = alpha, T, reverse, weight, chunk

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert teacher is not None
        a, T, r = self.alpha, self.T, self.reverse
        loss = masked_token_mean(lambda s, t: skew_kl(s, t, a, T, r), student.logits, teacher.logits,
                                 token_mask(student), self.chunk)
        return {"skl": self.weight * loss}
