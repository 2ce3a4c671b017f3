"""Reverse KL on tokens: KL(p_student ‖ p_teacher), mode-seeking."""
from __future__ import annotations

from torch import Tensor

from kdlab.core import Batch, Method, Outputs
from kdlab.methods import register_method
from kdlab.methods._tokens import check_temperature, log_probs, masked_token_mean, token_mask


def reverse_kl(student_logits: Tensor, teacher_logits: Tensor, T: float = 1.0) -> Tensor:
    """Per-token KL(softmax(s/T) ‖ softmax(t/T)): logits ``[N, V]`` → ``[N]`` (nats).

    Equals TRL's generalised JSD at β = 1."""
    s, t = log_probs(student_logits, T), log_probs(teacher_logits, T)
    return (s.exp() * (s - t)).sum(-1)


@register_method("rkl")
class ReverseKL(Method):
    """MiniLLM: Knowledge Distillation of Large Language Models (Gu, Dong, Wei, Huang; ICLR 2024).

    Token-level reverse KL: loss = weight · mean over kept tokens of KL(p_S ‖ p_T) at temperature T.
    Mode-seeking: the student concentrates on the teacher's large modes instead of covering its
    tail (MiniLLM optimises the sequence-level reverse KL with policy gradient; this is its
    per-token form, as in GKD's ablations). Logits ``[B, L, V]`` with ``student.mask``.
    """

    paper_ce = 0.0

    def __init__(self, T: float = 1.0, weight: float = 1.0, chunk: int = 64) -> None:
        super().__init__()
        check_temperature(T)
        self.T, self.weight, self.chunk = T, weight, chunk

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert teacher is not None
        T = self.T
        loss = masked_token_mean(lambda s, t: reverse_kl(s, t, T), student.logits, teacher.logits,
                                 token_mask(student), self.chunk)
        return {"rkl": self.weight * loss}
