"""Hinton KD: soft labels at temperature T."""
from __future__ import annotations

from torch import Tensor

from kdlab.core import Batch, Method, Outputs
from kdlab.methods import register_method
from kdlab.methods._common import kl_div_soft
from kdlab.methods._logits import flatten_tokens
from kdlab.methods._logitstd import maybe_standardize


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, T: float = 4.0) -> Tensor:
    """T² · KL(softmax(t/T) ‖ softmax(s/T)), averaged over the batch. Logits ``[B, C]``.

    The T² keeps the gradient magnitude independent of T (Hinton et al., §2).
    """
    return T * T * kl_div_soft(student_logits, teacher_logits, T)


@register_method("kd")
class KD(Method):
    """Distilling the Knowledge in a Neural Network (Hinton, Vinyals, Dean; NeurIPS DL Workshop 2015).

    loss = weight · T² · KL(softmax(t/T) ‖ softmax(s/T)); pair with ``ce`` at 1 − weight for
    the paper's α·soft + (1−α)·hard objective. ``logit_stand`` z-scores both sides' logits first
    (Logit Standardization, CVPR 2024). Token logits ``[B, L, V]`` use the tokens in ``student.mask``.
    """

    paper_ce = 0.1  # α = 0.9 on the soft term, 1 − α on the labels

    def __init__(self, T: float = 4.0, weight: float = 0.9, logit_stand: bool = False) -> None:
        super().__init__()
        if T <= 0:
            raise ValueError(f"temperature T must be > 0, got {T}")
        self.T, self.weight, self.logit_stand = T, weight, logit_stand

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert teacher is not None
        s, t, _ = flatten_tokens(student, teacher)
        if s.shape[0] == 0:  # every token masked out
            return {}
        s, t = maybe_standardize(s, t, self.logit_stand)
        assert t is not None
        return {"kd": self.weight * kd_loss(s, t, self.T)}
