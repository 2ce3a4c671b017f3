"""Instance relationship graph: match vertices (logits), edges (instance distances) and cross-layer transformations."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.core import Batch, DataInfo, Method, Outputs
from kdlab.errors import IncompatibleError
from kdlab.methods import register_method
from kdlab.methods._connectors import common_size, require_teacher, resolve_pairs


def edge_matrix(f: Tensor, eps: float = 1e-12) -> Tensor:
    """IRG edges ``[B, B]``: squared Euclidean distances between instances, divided by their maximum."""
    f = f.reshape(f.shape[0], -1)
    sq = f.pow(2).sum(1)
    d = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * f @ f.t()).clamp(min=0.0)
    d = d.masked_fill(torch.eye(f.shape[0], dtype=torch.bool, device=f.device), 0.0)
    return d / d.max().clamp(min=eps)


def _pool_channels(x: Tensor, c: int) -> Tensor:
    """Average groups of channels of ``[B, C, ...]`` down to ``c`` (pairs when C = 2c)."""
    if x.shape[1] == c:
        return x
    rest = x.shape[2:]
    y = x.movedim(1, -1).reshape(-1, 1, x.shape[1])
    return F.adaptive_avg_pool1d(y, c).reshape(x.shape[0], *rest, c).movedim(-1, 1)


def align_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Bring two features of one network to a common shape: average-pool the larger spatial map
    (a map meeting a vector is globally pooled), then average groups of channels of the wider one."""
    if a.dim() == 4 and b.dim() == 4:
        size = common_size(a, b)
        a, b = F.adaptive_avg_pool2d(a, size), F.adaptive_avg_pool2d(b, size)
    elif a.dim() != b.dim():
        a = a.flatten(2).mean(2) if a.dim() > 2 else a
        b = b.flatten(2).mean(2) if b.dim() > 2 else b
    c = min(a.shape[1], b.shape[1])
    return _pool_channels(a, c), _pool_channels(b, c)


def transform_vector(f1: Tensor, f2: Tensor, eps: float = 1e-12) -> Tensor:
    """IRG transformation ``[B]``: each instance's squared distance between two layers, divided by the max."""
    a, b = align_pair(f1, f2)
    d = (a.reshape(a.shape[0], -1) - b.reshape(b.shape[0], -1)).pow(2).sum(1)
    return d / d.max().clamp(min=eps)


def irg_terms(student_logits: Tensor, teacher_logits: Tensor, student_feats: Sequence[Tensor],
              teacher_feats: Sequence[Tensor], transform_pairs: Sequence[tuple[int, int]] = ()
              ) -> tuple[Tensor, Tensor, Tensor]:
    """(vertex, edge, transformation) losses.

    vertex:    MSE between logits (the IRG vertices of the last layer);
    edge:      MSE between the edge matrices of each ``*_feats[i]``, averaged over i;
    transform: MSE between the transformation vectors of each ``(i, j)`` in ``transform_pairs``
               (layer i → layer j, computed within each network), averaged over pairs.
    """
    vertex = F.mse_loss(student_logits, teacher_logits.to(student_logits.dtype))
    edge = torch.stack([F.mse_loss(edge_matrix(s), edge_matrix(t.to(s.dtype)))
                        for s, t in zip(student_feats, teacher_feats)]).mean()
    if transform_pairs:
        tran = torch.stack([F.mse_loss(transform_vector(student_feats[i], student_feats[j]),
                                       transform_vector(teacher_feats[i].to(student_feats[i].dtype),
                                                        teacher_feats[j].to(student_feats[j].dtype)))
                            for i, j in transform_pairs]).mean()
    else:
        tran = vertex.new_zeros(())
    return vertex, edge, tran


@register_method("irg")
class IRG(Method):
    """Knowledge Distillation via Instance Relationship Graph (Liu, Cao, Li, Yuan, Hu, Li, Duan; CVPR 2019).

    loss = weight · (w_vertex · MSE(logits) + w_edge · mean_l MSE(E_s^l, E_t^l) + w_transform ·
    mean MSE(Tr_s, Tr_t)), with E^l the max-normalised squared-distance matrix between instances
    at layer l and Tr the max-normalised squared distance of each instance between two
    consecutive selected layers. Defaults follow Knowledge-Distillation-Zoo's one-to-one port of
    the authors' Caffe code: edges on the last two stages and ``pooled``, one transformation
    between those two stages, w_vertex=0.1, w_edge=5, w_transform=5.

    ``layers``: the stages to use, ``"layer2"`` (same name both sides) or ``"layer2:layer3"``
    (student:teacher), shallow to deep; default the last two stages both networks share, aligned
    from the deepest. Within one network, the transformation pools the larger map and averages
    channel groups of the wider layer to compare two layers (the reference halves channels).
    A network with a single stage cannot give a transformation: set ``w_transform=0`` there.
    """

    needs = frozenset({"logits", "features:*"})
    family = "relation"

    def __init__(self, w_vertex: float = 0.1, w_edge: float = 5.0, w_transform: float = 5.0, weight: float = 1.0,
                 layers: tuple[str, ...] | None = None) -> None:
        super().__init__()
        self.w_vertex, self.w_edge, self.w_transform, self.weight = w_vertex, w_edge, w_transform, weight
        self.layers = None if layers is None else tuple(layers)
        self.pairs: list[tuple[str, str]] | None = None
        self.transform: list[tuple[int, int]] = []

    def prepare(self, student: Outputs, teacher: Outputs | None, info: DataInfo) -> None:
        teacher = require_teacher("IRG", teacher)
        stages = resolve_pairs("IRG", student, teacher, self.layers)
        if self.layers is None:
            stages = stages[-2:]
        if self.w_transform and len(stages) < 2:
            raise IncompatibleError(
                f"IRG's transformation term needs two stages on each side, got {stages} (student has "
                f"{sorted(student.features)}, teacher {sorted(teacher.features)}); set w_transform=0 or layers=...")
        self.transform = [(i, i + 1) for i in range(len(stages) - 1)] if self.w_transform else []
        pooled = "pooled" in student.features and "pooled" in teacher.features
        self.pairs = stages + ([("pooled", "pooled")] if pooled and ("pooled", "pooled") not in stages else [])

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        if self.pairs is None:
            raise RuntimeError("IRG.prepare() must run before forward()")
        assert teacher is not None
        fs = [student.features[s] for s, _ in self.pairs]
        ft = [teacher.features[t] for _, t in self.pairs]
        vertex, edge, tran = irg_terms(student.logits, teacher.logits, fs, ft, self.transform)
        out = {"irg_vertex": self.weight * self.w_vertex * vertex, "irg_edge": self.weight * self.w_edge * edge}
        if self.transform:
            out["irg_transform"] = self.weight * self.w_transform * tran
        return out
