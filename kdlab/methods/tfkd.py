"""Teacher-free KD: a hand-designed "virtual teacher" (a softened, label-smoothing-like target)."""
from __future__ import annotations

import torch
from torch import Tensor

from kdlab.core import Batch, DataInfo, Method, Outputs
from kdlab.methods import register_method
from kdlab.methods._logits import flatten_tokens, resolve_targets
from kdlab.methods._logitstd import standardize


def virtual_teacher(targets: Tensor, num_classes: int, correct_prob: float = 0.99, T: float = 20.0,
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """softmax(p^d / T) with p^d(k) = a for the label, (1 − a)/(K − 1) elsewhere. ``[N, K]``."""
    pd = torch.full((targets.shape[0], num_classes), (1.0 - correct_prob) / (num_classes - 1),
                    dtype=dtype, device=targets.device)
    pd.scatter_(1, targets.view(-1, 1), correct_prob)
    return torch.softmax(pd / T, dim=1)


def tfkd_loss(student_logits: Tensor, targets: Tensor, T: float = 20.0, correct_prob: float = 0.99) -> Tensor:
    """KL(softmax(p^d/T) ‖ softmax(s)), summed over classes and averaged over the batch.

    As in the authors' code, only the virtual teacher is softened by T; the student is not.
    """
    q = virtual_teacher(targets, student_logits.shape[1], correct_prob, T, student_logits.dtype)
    log_s = torch.log_softmax(student_logits, dim=1)
    return (q * (q.log() - log_s)).sum(1).mean()


@register_method("tfkd")
class TfKD(Method):
    """Revisiting Knowledge Distillation via Label Smoothing Regularization (Yuan, Tay, Li, Wang, Feng; CVPR 2020).

    Tf-KD_reg, the teacher-free variant: loss = weight · KL(softmax(p^d/T) ‖ softmax(s)) with the
    manually designed teacher p^d (0.99 on the label, the rest spread evenly); pair with ``ce``
    at 1 − α. Defaults: the authors' CIFAR-100 ResNet-18 setting (T=20, a=0.99, reg_alpha=0.1,
    multiplier=100). Their code averages the KL over classes as well as samples (``nn.KLDivLoss()``
    with mean reduction), so their effective weight on the per-sample KL is
    reg_alpha·multiplier/K = 0.1·100/100 = 0.1, the default here; scale it with K when porting
    their numbers to another class count. Needs no teacher and no features; labels are required
    (unlabeled batches and targets of -100 contribute nothing). Token logits ``[B, L, V]`` are
    flattened over the student's mask. ``logit_stand`` z-scores the student's logits (there are
    no teacher logits). The self-training variant Tf-KD_self is plain ``kd`` with a pre-trained
    copy of the student as teacher.
    """

    needs = frozenset()

    def __init__(self, T: float = 20.0, correct_prob: float = 0.99, weight: float = 0.1,
                 logit_stand: bool = False) -> None:
        super().__init__()
        if T <= 0:
            raise ValueError(f"temperature T must be > 0, got {T}")
        if not 0.0 < correct_prob < 1.0:
            raise ValueError(f"correct_prob must be in (0, 1), got {correct_prob}")
        self.T, self.correct_prob, self.weight, self.logit_stand = T, correct_prob, weight, logit_stand

    def prepare(self, student: Outputs, teacher: Outputs | None, info: DataInfo) -> None:
        """Teacher-free: any teacher is ignored, and nothing is built."""

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        if batch.targets is None:
            return {}
        s, _, y = flatten_tokens(student, None, batch.targets)
        assert y is not None
        s, _, y = resolve_targets(s, None, y)
        if s.shape[0] == 0:
            return {}
        if self.logit_stand:
            s = standardize(s)
        return {"tfkd": self.weight * tfkd_loss(s, y, self.T, self.correct_prob)}
