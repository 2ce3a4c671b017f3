"""KD on z-scored logits: the Logit Standardization paper's headline setting, registered on its own."""
from __future__ import annotations

from torch import Tensor

from kdlab.core import Batch, Method, Outputs
from kdlab.methods import register_method
from kdlab.methods._logits import flatten_tokens
from kdlab.methods._logitstd import maybe_standardize
from kdlab.methods.kd import kd_loss


def lskd_loss(student_logits: Tensor, teacher_logits: Tensor, T: float = 2.0) -> Tensor:
    """T² · KL(softmax(Z(t)/T) ‖ softmax(Z(s)/T)), Z the z-score over classes."""
    s, t = maybe_standardize(student_logits, teacher_logits, True)
    assert t is not None
    return kd_loss(s, t, T)


@register_method("lskd")
class LSKD(Method):
    """Logit Standardization in Knowledge Distillation (Sun, Ren, Li, Wang, Cao; CVPR 2024).

    Hinton KD where both sides' logits are z-scored before the temperature:
    loss = weight · T² · KL(softmax(Z(t)/T) ‖ softmax(Z(s)/T)). Defaults are the authors'
    CIFAR-100 KD+Ours setting (``--logit-stand --base-temp 2 --kd-weight 9``, with ``ce`` at 0.1).
    ``logit_stand=False`` gives plain KD with these weights. Token logits ``[B, L, V]`` are
    flattened over the student's mask.
    """

    def __init__(self, T: float = 2.0, weight: float = 9.0, logit_stand: bool = True) -> None:
        super().__init__()
        if T <= 0:
            raise ValueError(f"temperature T must be > 0, got {T}")
        self.T, self.weight, self.logit_stand = T, weight, logit_stand

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert teacher is not None
        s, t, _ = flatten_tokens(student, teacher)
        assert t is not None
        if s.shape[0] == 0:
            return {}
        s, t = maybe_standardize(s, t, self.logit_stand)
        assert t is not None
        return {"lskd": self.weight * kd_loss(s, t, self.T)}
