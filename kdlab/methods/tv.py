"""Total variation distance on tokens: ½·Σ_v |p_T(v) − p_S(v)|."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdlab.core import Batch, Method, Outputs
from kdlab.methods import register_method
from kdlab.methods._tokens import check_temperature, masked_token_mean, token_mask


def total_variation(student_logits: Tensor, teacher_logits: Tensor, T: float = 1.0) -> Tensor:
    """Per-token TV distance ½·‖softmax(t/T) − softmax(s/T)‖₁: logits ``[N, V]`` → ``[N]`` in [0, 1]."""
    return 0.5 * (F.softmax(teacher_logits / T, dim=-1) - F.softmax(student_logits / T, dim=-1)).abs().sum(-1)


@register_method("tv")
class TotalVariation(Method):
    """f-Divergence Minimization for Sequence-Level Knowledge Distillation (Wen, Li, Du, Mou; ACL 2023).

    loss = weight · mean over kept tokens of the total variation distance between p_T and p_S
    (the step-wise TVD of f-DISTILL; symmetric and bounded in [0, 1]). Logits ``[B, L, V]``
    with ``student.mask``.
    """

    paper_ce = 0.0

    def __init__(self, T: float = 1.0, weight: float = 1.0, chunk: int = 64) -> None:
        super().__init__()
        check_temperature(T)
        self.T, self.weight, self.chunk = T, weight, chunk

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert teacher is not None
        T = self.T
        loss = masked_token_mean(lambda s, t: total_variation(s, t, T), student.logits, teacher.logits,
                                 token_mask(student), self.chunk)
        return {"tv": self.weight * loss}
