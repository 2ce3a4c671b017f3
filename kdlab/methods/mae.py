"""Logit MAE: the student loss of data-free adversarial distillation."""
from __future__ import annotations

from torch import Tensor

from kdlab.core import Batch, Method, Outputs
from kdlab.methods import register_method
from kdlab.methods._logits import flatten_tokens


def mae_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Mean absolute difference of the logits over all ``B·C`` entries. ``[B, C]``."""
    return (student_logits - teacher_logits).abs().mean()


@register_method("mae")
class MAE(Method):
    """Data-Free Adversarial Distillation (Fang, Song, Wang, Shen, Wang, Song; arXiv 1912.11006, 2019).

    loss = weight · mean |s − t| over the logits (the paper's student loss, the quantity its
    generator maximises: unlike a KL it keeps a gradient when both already predict the same class).
    Usable on real data too. Token logits ``[B, L, V]`` use the tokens in ``student.mask``.
    """

    paper_ce = 0.0  # the paper trains without labels

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert teacher is not None
        s, t, _ = flatten_tokens(student, teacher)
        assert t is not None
        if s.shape[0] == 0:
            return {}
        return {"mae": self.weight * mae_loss(s, t)}
