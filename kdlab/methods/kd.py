"""Hinton KD: soft labels at temperature T."""
from __future__ import annotations

from torch import Tensor

from kdlab.core import Batch, Method, Outputs
from kdlab.methods import register_method
from kdlab.methods._common import kl_div_soft


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, T: float = 4.0) -> Tensor:
    """T² · KL(softmax(t/T) ‖ softmax(s/T)), averaged over the batch. Logits ``[B, C]``.

    The T² keeps the gradient magnitude independent of T (Hinton et al., §2).
    """
    return T * T * kl_div_soft(student_logits, teacher_logits, T)


@register_method("kd")
class KD(Method):
    """Distilling the Knowledge in a Neural Network (Hinton, Vinyals, Dean; NeurIPS DL Workshop 2015).

    loss = weight · T² · KL(softmax(t/T) ‖ softmax(s/T)); pair with ``ce`` at 1 − weight for
    the paper's α·soft + (1−α)·hard objective.
    """

    def __init__(self, T: float = 4.0, weight: float = 0.9) -> None:
        super().__init__()
        if T <= 0:
            raise ValueError(f"temperature T must be > 0, got {T}")
        self.T, self.weight = T, weight

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert teacher is not None
        return {"kd": self.weight * kd_loss(student.logits, teacher.logits, self.T)}
