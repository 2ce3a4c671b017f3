"""Small shared helpers for method files (not a method)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def kl_div_soft(student_logits: Tensor, teacher_logits: Tensor, T: float, reduction: str = "batchmean") -> Tensor:
    """KL(softmax(t/T) ‖ softmax(s/T)) per batch (``batchmean``) or per sample (``none`` → ``[B]``).

    Logits ``[..., C]``; extra leading dims (tokens) are flattened into the batch.
    """
    s = F.log_softmax(student_logits / T, dim=-1)
    t = F.log_softmax(teacher_logits / T, dim=-1)
    kl = (t.exp() * (t - s)).sum(-1)
    if reduction == "none":
        return kl
    return kl.mean()
