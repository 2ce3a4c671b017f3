"""Similarity-preserving KD: match the row-normalised B×B activation-similarity matrices."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdlab.core import Batch, DataInfo, Method, Outputs
from kdlab.methods import register_method
from kdlab.methods._connectors import require_teacher, resolve_pairs


def similarity_matrix(f: Tensor) -> Tensor:
    """G = Q Qᵀ with Q the activations flattened to ``[B, ·]``, each row L2-normalised."""
    q = f.reshape(f.shape[0], -1)
    return F.normalize(q @ q.t(), p=2, dim=1)


def sp_loss(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """‖G_t − G_s‖²_F / B² (Tung & Mori, Eq. 4). Channel/spatial sizes may differ between sides."""
    b = student_feat.shape[0]
    diff = similarity_matrix(teacher_feat.to(student_feat.dtype)) - similarity_matrix(student_feat)
    return (diff * diff).sum() / (b * b)


@register_method("sp")
class SP(Method):
    """Similarity-Preserving Knowledge Distillation (Tung, Mori; ICCV 2019).

    loss = weight · ‖G_t − G_s‖²_F / B² on the last stage's feature map (RepDistiller's
    ``feat[-2]``: the deepest ``layer{i}`` of each side, which may differ in depth), weight 3000
    (RepDistiller / mdistiller CIFAR-100). ``layer`` picks another feature: ``"layer2"`` on both
    sides or ``"layer2:layer3"`` (student:teacher). Works for 2-D (MLP) features too.
    """

    needs = frozenset({"features:*"})
    family = "relation"

    def __init__(self, layer: str | None = None, weight: float = 3000.0) -> None:
        super().__init__()
        self.layer, self.weight = layer, weight
        self.pair: tuple[str, str] | None = None

    def prepare(self, student: Outputs, teacher: Outputs | None, info: DataInfo) -> None:
        teacher = require_teacher("SP", teacher)
        pairs = resolve_pairs("SP", student, teacher, None if self.layer is None else [self.layer])
        self.pair = pairs[-1]

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        if self.pair is None:
            raise RuntimeError("SP.prepare() must run before forward()")
        assert teacher is not None
        s_key, t_key = self.pair
        return {"sp": self.weight * sp_loss(student.features[s_key], teacher.features[t_key])}
