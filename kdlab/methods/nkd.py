"""Normalized KD: the target class as a weighted CE, the non-target classes as a normalized soft CE."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdlab.core import Batch, Method, Outputs
from kdlab.methods import register_method
from kdlab.methods._logits import flatten_tokens, non_target, resolve_targets
from kdlab.methods._logitstd import maybe_standardize


def nkd_terms(student_logits: Tensor, teacher_logits: Tensor, target: Tensor, T: float = 1.0,
              gamma: float = 1.5) -> tuple[Tensor, Tensor]:
    """(target term, non-target term) of NKD, averaged over the batch. Logits ``[N, C]``.

    target:     −T_t · log S_t, with S, T the plain (T=1) softmax of student and teacher;
    non-target: −γ · T² · Σ_{i≠t} N(T_i^T) · log N(S_i^T), where N(·) renormalises the tempered
                probabilities over the non-target classes (= softmax over those logits).
    This is a cross-entropy, not a KL: at student == teacher the non-target term equals
    γ·T²·H(N(T^T)), its minimum over the student, not zero.
    """
    log_s = F.log_softmax(student_logits, dim=1)
    p_t = F.softmax(teacher_logits, dim=1)
    idx = target.view(-1, 1)
    loss_t = -(p_t.gather(1, idx) * log_s.gather(1, idx)).mean()
    ls = F.log_softmax(non_target(student_logits, target) / T, dim=1)
    pt = F.softmax(non_target(teacher_logits, target) / T, dim=1)
    loss_nt = -gamma * T * T * (pt * ls).sum(1).mean()
    return loss_t, loss_nt


def nkd_loss(student_logits: Tensor, teacher_logits: Tensor, target: Tensor, T: float = 1.0,
             gamma: float = 1.5) -> Tensor:
    lt, lnt = nkd_terms(student_logits, teacher_logits, target, T, gamma)
    return lt + lnt


@register_method("nkd")
class NKD(Method):
    """From Knowledge Distillation to Self-Knowledge Distillation: A Unified Approach with Normalized Loss
    and Customized Soft Labels (Yang, Zeng, Li, Zhang, Yuan, Li; ICCV 2023).

    NKD: loss = weight · (−T_t log S_t − γ·T²·Σ_{i≠t} N(T_i^T) log N(S_i^T)), used with ``ce`` at
    1.0. Defaults are the authors' ImageNet settings in yzd-v/cls_KD (T=1, γ=1.5); their CIFAR-100
    ResNet-34→18 config uses T=3, γ=3.5. The self-KD variant (USKD) is not included. Without
    labels the teacher's argmax is the target; targets equal to -100 are skipped. Token logits
    ``[B, L, V]`` are flattened over the student's mask. ``logit_stand`` z-scores both sides'
    logits first (both terms then see standardised logits).
    """

    def __init__(self, T: float = 1.0, gamma: float = 1.5, weight: float = 1.0, logit_stand: bool = False) -> None:
        super().__init__()
        if T <= 0:
            raise ValueError(f"temperature T must be > 0, got {T}")
        self.T, self.gamma, self.weight, self.logit_stand = T, gamma, weight, logit_stand

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert teacher is not None
        s, t, y = flatten_tokens(student, teacher, batch.targets)
        assert t is not None
        s, t, y = resolve_targets(s, t, y)
        if s.shape[0] == 0:
            return {}
        s, t = maybe_standardize(s, t, self.logit_stand)
        assert t is not None
        lt, lnt = nkd_terms(s, t, y, self.T, self.gamma)
        return {"nkd_target": self.weight * lt, "nkd_nontarget": self.weight * lnt}
