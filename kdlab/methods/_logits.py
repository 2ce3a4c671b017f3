"""Helpers for logit methods: token flattening and target / non-target splits (not a method)."""
from __future__ import annotations

import torch
from torch import Tensor

from kdlab.core import Outputs

IGNORE_INDEX = -100


def flatten_tokens(student: Outputs, teacher: Outputs | None, targets: Tensor | None = None
                   ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``[B, C]`` logits pass through; ``[B, L, V]`` logits become ``[N, V]`` rows for the tokens
    kept by ``student.mask`` (all tokens when there is no mask). Targets are flattened alike."""
    s = student.logits
    t = None if teacher is None else teacher.logits
    if s.dim() == 2:
        return s, t, targets
    keep = None if student.mask is None else student.mask.reshape(-1).bool()
    s = s.reshape(-1, s.shape[-1])
    t = None if t is None else t.reshape(-1, t.shape[-1])
    y = None if targets is None else targets.reshape(-1)
    if keep is not None:
        s = s[keep]
        t = None if t is None else t[keep]
        y = None if y is None else y[keep]
    return s, t, y


def resolve_targets(student_logits: Tensor, teacher_logits: Tensor | None, targets: Tensor | None
                    ) -> tuple[Tensor, Tensor | None, Tensor]:
    """Rows with a usable target class. Without labels the teacher's argmax stands in; rows whose
    target is the ignore index (-100) are dropped. Returns (student, teacher, targets)."""
    if targets is None:
        if teacher_logits is None:
            raise ValueError("no targets and no teacher to take pseudo-labels from")
        targets = teacher_logits.argmax(dim=-1)
    targets = targets.reshape(-1).long()
    keep = targets != IGNORE_INDEX
    if not bool(keep.all()):
        student_logits = student_logits[keep]
        teacher_logits = None if teacher_logits is None else teacher_logits[keep]
        targets = targets[keep]
    return student_logits, teacher_logits, targets


def non_target(x: Tensor, target: Tensor) -> Tensor:
    """``[N, C]`` → ``[N, C-1]``: each row without its target column (order kept)."""
    n, c = x.shape
    keep = torch.ones_like(x, dtype=torch.bool).scatter_(1, target.view(-1, 1), False)
    return x[keep].view(n, c - 1)
