"""Probabilistic knowledge transfer: match conditional distributions built from cosine-similarity kernels."""
from __future__ import annotations

import torch
from torch import Tensor

from kdlab.core import Batch, Method, Outputs
from kdlab.methods import register_method


def cosine_conditional(f: Tensor, eps: float = 1e-7) -> Tensor:
    """p_{j|i} ∝ (1 + cos(f_i, f_j)) / 2, each row normalised to sum to 1. ``[B, B]``."""
    f = f.reshape(f.shape[0], -1)
    f = f / (f.norm(dim=1, keepdim=True) + eps)
    k = (f @ f.t() + 1.0) / 2.0
    return k / k.sum(dim=1, keepdim=True)


def pkt_loss(student: Tensor, teacher: Tensor, eps: float = 1e-7) -> Tensor:
    """mean_{i,j} p^t_{j|i} · log((p^t_{j|i} + ε) / (p^s_{j|i} + ε)) (Passalis & Tefas, Eq. 9-10, with the
    author's cosine kernel; the mean over all B² entries follows the author's code)."""
    ps = cosine_conditional(student, eps)
    pt = cosine_conditional(teacher.to(student.dtype), eps)
    return (pt * torch.log((pt + eps) / (ps + eps))).mean()


@register_method("pkt")
class PKT(Method):
    """Learning Deep Representations with Probabilistic Knowledge Transfer (Passalis, Tefas; ECCV 2018).

    loss = weight · pkt_loss(student pooled, teacher pooled): the KL divergence between the
    teachers' and the student's conditional probabilities p_{j|i} built from the cosine-similarity
    kernel (1 + cos)/2 over the batch. Weight 30000 (RepDistiller / mdistiller CIFAR-100). The
    kernel lives on B×B, so the two widths may differ and no connector is needed.
    """

    needs = frozenset({"pooled"})
    family = "relation"

    def __init__(self, weight: float = 30000.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert teacher is not None
        return {"pkt": self.weight * pkt_loss(student.features["pooled"], teacher.features["pooled"])}
