"""Embedding distillation: the student reproduces the teacher's sentence embedding."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.core import Batch, DataInfo, Method, Outputs
from kdlab.errors import IncompatibleError
from kdlab.methods import register_method
from kdlab.methods._connectors import require_teacher


def embed_loss(student: Tensor, teacher: Tensor, mse: float = 1.0, cosine: float = 1.0) -> Tensor:
    """``mse`` · mean((s − t)²) + ``cosine`` · mean(1 − cos(s, t)) for embeddings ``[B, D]``."""
    t = teacher.to(student.dtype)
    return mse * F.mse_loss(student, t) + cosine * (1 - F.cosine_similarity(student, t, dim=-1)).mean()


@register_method("embed")
class EmbeddingDistill(Method):
    """Making Monolingual Sentence Embeddings Multilingual using Knowledge Distillation (Reimers &
    Gurevych; EMNLP 2020): the student's sentence embedding is regressed onto the teacher's (MSE),
    here with a cosine term as well, since retrieval compares embeddings by angle.

    loss = weight · (mse · MSE(P s, t) + cosine · (1 − cos(P s, t))) on the ``pooled`` features
    (the text encoders' mean over real tokens, so padding never enters), with ``P`` a learned linear
    projection when the widths differ (identity otherwise).
    """

    needs = frozenset({"pooled"})
    family = "feature"

    def __init__(self, weight: float = 1.0, mse: float = 1.0, cosine: float = 1.0) -> None:
        super().__init__()
        self.weight, self.mse, self.cosine = weight, mse, cosine
        self.proj: nn.Module = nn.Identity()

    def prepare(self, student: Outputs, teacher: Outputs | None, info: DataInfo) -> None:
        super().prepare(student, teacher, info)
        t = require_teacher("embed", teacher)
        s_d, t_d = student.features["pooled"], t.features["pooled"]
        if s_d.dim() != 2 or t_d.dim() != 2:
            raise IncompatibleError(f"embed needs pooled embeddings [B, D], got {tuple(s_d.shape)} and "
                                    f"{tuple(t_d.shape)}")
        if s_d.shape[1] != t_d.shape[1]:
            self.proj = nn.Linear(s_d.shape[1], t_d.shape[1])

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert teacher is not None
        s = self.proj(student.features["pooled"])
        return {"embed": self.weight * embed_loss(s, teacher.features["pooled"], self.mse, self.cosine)}
