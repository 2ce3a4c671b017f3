"""Logit standardisation (z-score over classes) shared by the logit methods' ``logit_stand`` switch.

Logit Standardization in Knowledge Distillation (Sun, Ren, Li, Wang, Cao; CVPR 2024): before the
temperature, each logit vector is replaced by its z-score, so the student only has to match the
teacher's logit *relations*, not their range. The base temperature then applies to the
standardised logits (the paper's CIFAR-100 setting is T=2 with the KD term weighted 9).
"""
from __future__ import annotations

from torch import Tensor


def standardize(logits: Tensor, eps: float = 1e-7) -> Tensor:
    """``(z - mean(z)) / (std(z) + eps)`` over the last (class) dimension.

    The standard deviation is the unbiased one (``torch.std`` default), as in the authors' code;
    the population version would only rescale the result by ``sqrt(C / (C - 1))``.
    """
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True)
    return (logits - mean) / (std + eps)


def maybe_standardize(student_logits: Tensor, teacher_logits: Tensor | None, on: bool) -> tuple[Tensor, Tensor | None]:
    """Standardise both sides when ``on`` (the teacher may be absent, e.g. teacher-free methods)."""
    if not on:
        return student_logits, teacher_logits
    return standardize(student_logits), None if teacher_logits is None else standardize(teacher_logits)
