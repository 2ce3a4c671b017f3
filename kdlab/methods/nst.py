"""Neuron selectivity transfer: match the distributions of channel activation patterns (MMD)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdlab.core import Batch, DataInfo, Method, Outputs
from kdlab.methods import register_method
from kdlab.methods._connectors import common_size, match_spatial, require_4d, require_teacher, resolve_pairs


def poly_kernel(a: Tensor, b: Tensor, degree: int = 2, c: float = 0.0) -> Tensor:
    """``[B, N, D] × [B, M, D] -> [B, N, M]``: (aᵢ·bⱼ + c)^degree."""
    return (a @ b.transpose(1, 2) + c).pow(degree)


def nst_loss(f_s: Tensor, f_t: Tensor, degree: int = 2, c: float = 0.0) -> Tensor:
    """Squared MMD between the student's and the teacher's channel patterns, batch-averaged.

    Each channel's map is flattened and L2-normalised (a "sample" of the neuron-selectivity
    distribution), then with the polynomial kernel k:
    ``mean k(sᵢ, sᵢ') + mean k(tⱼ, tⱼ') − 2 mean k(sᵢ, tⱼ)``. Channel counts may differ; the
    spatially larger map is average-pooled to the smaller. The teacher-only term is a constant.
    """
    size = common_size(f_s, f_t)
    s = F.normalize(match_spatial(f_s, size).flatten(2), dim=2)
    t = F.normalize(match_spatial(f_t.to(f_s.dtype), size).flatten(2), dim=2)
    return (poly_kernel(t, t, degree, c).mean().detach() + poly_kernel(s, s, degree, c).mean()
            - 2 * poly_kernel(s, t, degree, c).mean())


@register_method("nst")
class NST(Method):
    """Like What You Like: Knowledge Distill via Neuron Selectivity Transfer (Huang, Wang; arXiv 2017).

    loss = weight · Σ_stages MMD²(student channel patterns, teacher channel patterns) with the
    polynomial kernel k(x, y) = (xᵀy + c)^d, d = 2, c = 0 (the paper's best kernel).

    layers: stage features to match (``"s_key:t_key"`` to pair different names); default every
    stage both networks share, aligned from the deepest. weight = 50 (RepDistiller / mdistiller
    CIFAR-100 setting). Parameter-free: no connector; the spatially larger map is average-pooled
    to the smaller.
    """

    needs = frozenset({"features:*"})
    family = "feature"

    def __init__(self, weight: float = 50.0, degree: int = 2, c: float = 0.0,
                 layers: tuple[str, ...] | None = None) -> None:
        super().__init__()
        if degree < 1:
            raise ValueError(f"degree must be >= 1, got {degree}")
        self.weight, self.degree, self.c = weight, degree, c
        self.layers = None if layers is None else tuple(layers)
        self.pairs: list[tuple[str, str]] = []

    def prepare(self, student: Outputs, teacher: Outputs | None, info: DataInfo) -> None:
        teacher = require_teacher("NST", teacher)
        pairs = resolve_pairs("NST", student, teacher, self.layers)
        for s, t in pairs:
            require_4d("NST", s if s == t else f"{s}:{t}", student.features[s], teacher.features[t])
        self.pairs = pairs

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        if not self.pairs:
            raise RuntimeError("NST.prepare() must run before forward()")
        assert teacher is not None
        total = sum(nst_loss(student.features[s], teacher.features[t], self.degree, self.c) for s, t in self.pairs)
        return {"nst": self.weight * total}  # type: ignore[dict-item]
