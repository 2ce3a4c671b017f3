"""Relational KD: match the teacher's pairwise distances and triplet angles between samples."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.core import Batch, Method, Outputs
from kdlab.methods import register_method


def pairwise_distance(e: Tensor, eps: float = 1e-12) -> Tensor:
    """Euclidean distances ``[B, B]`` between the rows of ``e`` (zero diagonal)."""
    sq = e.pow(2).sum(dim=1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt()
    eye = torch.eye(e.shape[0], dtype=torch.bool, device=e.device)
    return d.masked_fill(eye, 0.0)


def rkd_distance(student: Tensor, teacher: Tensor) -> Tensor:
    """Huber loss between the distance matrices, each divided by its mean off-diagonal distance."""
    t = pairwise_distance(teacher)
    t = t / t[t > 0].mean()
    s = pairwise_distance(student)
    s = s / s[s > 0].mean()
    return F.smooth_l1_loss(s, t)


def triplet_angles(e: Tensor) -> Tensor:
    """``[B, B, B]``: cos of the angle at vertex i between e_j − e_i and e_k − e_i (0 when degenerate)."""
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # [i, j] = unit(e_j - e_i)
    return torch.bmm(diff, diff.transpose(1, 2))


def rkd_angle(student: Tensor, teacher: Tensor) -> Tensor:
    """Huber loss between all triplet angle cosines."""
    return F.smooth_l1_loss(triplet_angles(student), triplet_angles(teacher))


def rkd_terms(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    """(distance, angle) losses on embeddings ``[B, D_s]`` and ``[B, D_t]`` (dims may differ)."""
    s, t = student.flatten(1), teacher.flatten(1).to(student.dtype)
    return rkd_distance(s, t), rkd_angle(s, t)


@register_method("rkd")
class RKD(Method):
    """Relational Knowledge Distillation (Park, Kim, Lu, Cho; CVPR 2019).

    loss = weight · (w_dist · Huber(ψ_D(s), ψ_D(t)) + w_angle · Huber(ψ_A(s), ψ_A(t))) on the
    penultimate ``pooled`` embeddings; ψ_D are pairwise distances normalised by their mean,
    ψ_A the cosines of all triplet angles. Defaults w_dist=25, w_angle=50 (paper, RepDistiller,
    mdistiller). Relations are B×B and B×B×B, so student and teacher widths may differ and no
    connector is needed; the angle term holds a ``[B, B, D]`` difference tensor (memory O(B²·D)).
    """

    needs = frozenset({"pooled"})
    family = "relation"

    def __init__(self, w_dist: float = 25.0, w_angle: float = 50.0, weight: float = 1.0) -> None:
        super().__init__()
        self.w_dist, self.w_angle, self.weight = w_dist, w_angle, weight

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert teacher is not None
        d, a = rkd_terms(student.features["pooled"], teacher.features["pooled"])
        return {"rkd_dist": self.weight * self.w_dist * d, "rkd_angle": self.weight * self.w_angle * a}
