"""Decoupled KD: target-class (TCKD) and non-target-class (NCKD) parts of KD, weighted apart."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.core import Batch, Method, Outputs
from kdlab.methods import register_method
from kdlab.methods._logits import flatten_tokens, non_target, resolve_targets
from kdlab.methods._logitstd import maybe_standardize


def _binary_log_probs(logits: Tensor, target: Tensor, T: float) -> Tensor:
    """log [p_target, 1 - p_target] at temperature T, ``[N, 2]``, computed stably in log space."""
    z = logits / T
    log_all = torch.logsumexp(z, dim=1)
    log_gt = z.gather(1, target.view(-1, 1)).squeeze(1) - log_all
    log_rest = torch.logsumexp(non_target(z, target), dim=1) - log_all
    return torch.stack([log_gt, log_rest], dim=1)


def dkd_terms(student_logits: Tensor, teacher_logits: Tensor, target: Tensor, T: float = 4.0) -> tuple[Tensor, Tensor]:
    """(TCKD, NCKD), each T²-scaled and averaged over the batch. Logits ``[N, C]``, target ``[N]``.

    TCKD = T² · KL(b_t ‖ b_s) with b = [p_target, 1 − p_target] (binary target/rest split);
    NCKD = T² · KL(p̂_t ‖ p̂_s) with p̂ the softmax over the non-target classes only (Zhao et al., Eq. 2-4).
    """
    bs = _binary_log_probs(student_logits, target, T)
    bt = _binary_log_probs(teacher_logits, target, T)
    tckd = (bt.exp() * (bt - bs)).sum(1).mean()
    ls = F.log_softmax(non_target(student_logits, target) / T, dim=1)
    lt = F.log_softmax(non_target(teacher_logits, target) / T, dim=1)
    nckd = (lt.exp() * (lt - ls)).sum(1).mean()
    return T * T * tckd, T * T * nckd


def dkd_loss(student_logits: Tensor, teacher_logits: Tensor, target: Tensor, alpha: float = 1.0,
             beta: float = 8.0, T: float = 4.0) -> Tensor:
    """α · TCKD + β · NCKD (see :func:`dkd_terms`)."""
    tckd, nckd = dkd_terms(student_logits, teacher_logits, target, T)
    return alpha * tckd + beta * nckd


@register_method("dkd")
class DKD(Method):
    """Decoupled Knowledge Distillation (Zhao, Cui, Song, Qiu, Liang; CVPR 2022).

    loss = weight · min((epoch+1) / warmup, 1) · (α · TCKD + β · NCKD), defaults from the authors'
    mdistiller CIFAR-100 config (α=1, β=8, T=4, 20 warm-up epochs, paired with ``ce`` at 1.0).
    The warm-up factor follows the engine's :meth:`set_progress` (1-based epochs as in mdistiller);
    before any ``set_progress`` call it is 1. Without labels the teacher's argmax is the target;
    targets equal to -100 are skipped. Token logits ``[B, L, V]`` are flattened over the
    student's mask. ``logit_stand`` z-scores both sides' logits before the temperature.
    """

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, T: float = 4.0, warmup: int = 20,
                 weight: float = 1.0, logit_stand: bool = False) -> None:
        super().__init__()
        if T <= 0:
            raise ValueError(f"temperature T must be > 0, got {T}")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        self.alpha, self.beta, self.T, self.warmup = alpha, beta, T, warmup
        self.weight, self.logit_stand = weight, logit_stand
        # None until set_progress runs; Method's own type for epoch (from set_progress) is int
        self.epoch: int | None = None  # type: ignore[assignment]

    def warmup_factor(self) -> float:
        if self.warmup == 0 or self.epoch is None:
            return 1.0
        return min((self.epoch + 1) / self.warmup, 1.0)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert teacher is not None
        s, t, y = flatten_tokens(student, teacher, batch.targets)
        assert t is not None
        s, t, y = resolve_targets(s, t, y)
        if s.shape[0] == 0:
            return {}
        s, t = maybe_standardize(s, t, self.logit_stand)
        assert t is not None
        tckd, nckd = dkd_terms(s, t, y, self.T)
        w = self.weight * self.warmup_factor()
        return {"dkd_tckd": w * self.alpha * tckd, "dkd_nckd": w * self.beta * nckd}
