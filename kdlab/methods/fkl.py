"""Forward KL on tokens: KL(p_teacher ‖ p_student), the classic token-level KD objective."""
from __future__ import annotations

from torch import Tensor

from kdlab.core import Batch, Method, Outputs
from kdlab.methods import register_method
from kdlab.methods._tokens import check_temperature, log_probs, masked_token_mean, token_mask


def forward_kl(student_logits: Tensor, teacher_logits: Tensor, T: float = 1.0) -> Tensor:
    """Per-token KL(softmax(t/T) ‖ softmax(s/T)): logits ``[N, V]`` → ``[N]`` (nats).

    Equals TRL's generalised JSD at β = 0 (no T² factor, as in TRL)."""
    s, t = log_probs(student_logits, T), log_probs(teacher_logits, T)
    return (t.exp() * (t - s)).sum(-1)


@register_method("fkl")
class ForwardKL(Method):
    """Sequence-Level Knowledge Distillation (Kim & Rush, EMNLP 2016), word-level KD term.

    loss = weight · mean over kept tokens of KL(p_T ‖ p_S) at temperature T; logits ``[B, L, V]``
    with ``student.mask`` ``[B, L]`` (``[B, C]`` logits are one token each). Mass-covering: the
    student spreads over every mode of the teacher. Chunked over the sequence (``chunk`` positions).
    """

    paper_ce = 0.0  # the word-level KD objective replaces the labels

    def __init__(self, T: float = 1.0, weight: float = 1.0, chunk: int = 64) -> None:
        super().__init__()
        check_temperature(T)
        self.T, self.weight, self.chunk = T, weight, chunk

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert teacher is not None
        T = self.T
        loss = masked_token_mean(lambda s, t: forward_kl(s, t, T), student.logits, teacher.logits,
                                 token_mask(student), self.chunk)
        return {"fkl": self.weight * loss}
