"""Attention transfer: match the normalised spatial attention maps of every stage."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdlab.core import Batch, DataInfo, Method, Outputs
from kdlab.methods import register_method
from kdlab.methods._connectors import common_size, match_spatial, require_4d, require_teacher, resolve_pairs


def attention_map(f: Tensor, p: float = 2.0) -> Tensor:
    """Q = vec(mean_c |f_c|^p), L2-normalised per sample: ``[B, C, H, W] -> [B, H·W]``."""
    q = f.abs().pow(p).mean(1).flatten(1)
    return F.normalize(q, dim=1)


def at_loss(f_s: Tensor, f_t: Tensor, p: float = 2.0) -> Tensor:
    """mean over batch and positions of ``(Q_S/‖Q_S‖ − Q_T/‖Q_T‖)²`` for one stage.

    Channel counts may differ. When the spatial sizes differ, the larger map is average-pooled
    to the smaller (as in the reference code).
    """
    size = common_size(f_s, f_t)
    a_s = attention_map(match_spatial(f_s, size), p)
    a_t = attention_map(match_spatial(f_t.to(f_s.dtype), size), p)
    return (a_s - a_t).pow(2).mean()


@register_method("at")
class AT(Method):
    """Paying More Attention to Attention: Improving the Performance of Convolutional Neural Networks
    via Attention Transfer (Zagoruyko, Komodakis; ICLR 2017).

    loss = weight · Σ_stages mean((Q_S/‖Q_S‖₂ − Q_T/‖Q_T‖₂)²), Q = vec(mean_c |A_c|^p).

    layers: stage features to match (``"s_key:t_key"`` to pair different names); default every
    stage both networks share, aligned from the deepest. p = 2, weight = 1000 (the authors' code,
    RepDistiller and mdistiller). Like the authors' code, the per-stage term is the mean squared
    difference of the normalised maps (the paper writes β/2 · ‖·‖₂ of the difference).
    Parameter-free: no connector; the spatially larger map is average-pooled to the smaller.
    """

    needs = frozenset({"features:*"})
    family = "feature"

    def __init__(self, p: float = 2.0, weight: float = 1000.0, layers: tuple[str, ...] | None = None) -> None:
        super().__init__()
        if p <= 0:
            raise ValueError(f"p must be > 0, got {p}")
        self.p, self.weight = p, weight
        self.layers = None if layers is None else tuple(layers)
        self.pairs: list[tuple[str, str]] = []

    def prepare(self, student: Outputs, teacher: Outputs | None, info: DataInfo) -> None:
        teacher = require_teacher("AT", teacher)
        pairs = resolve_pairs("AT", student, teacher, self.layers)
        for s, t in pairs:
            require_4d("AT", s if s == t else f"{s}:{t}", student.features[s], teacher.features[t])
        self.pairs = pairs

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        if not self.pairs:
            raise RuntimeError("AT.prepare() must run before forward()")
        assert teacher is not None
        total = sum(at_loss(student.features[s], teacher.features[t], self.p) for s, t in self.pairs)
        return {"at": self.weight * total}  # type: ignore[dict-item]
