"""Supervised cross-entropy on hard labels (not a distillation method; the objective's base term)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdlab.core import Batch, DataInfo, Method, Outputs
from kdlab.methods import register_method


@register_method("ce")
class CE(Method):
    """Cross-entropy on labels (the supervised term; skipped for unlabeled batches).

    On mixed inputs (``batch.mix``, mixup/cutmix) it is λ·CE(y) + (1 − λ)·CE(y_partner) per sample.
    """

    needs = frozenset()
    family = "supervised"

    def __init__(self, weight: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.weight, self.label_smoothing = weight, label_smoothing

    def prepare(self, student: Outputs, teacher: Outputs | None, info: DataInfo) -> None:
        pass

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        if batch.targets is None:
            return {}
        logits = student.logits.flatten(0, -2) if student.logits.dim() > 2 else student.logits
        if batch.mix is not None and batch.mix[0] is not None:
            partner, lam = batch.mix
            ce = lambda y: F.cross_entropy(logits, y, label_smoothing=self.label_smoothing,  # noqa: E731
                                           reduction="none")
            return {"ce": self.weight * (lam * ce(batch.targets) + (1 - lam) * ce(partner)).mean()}
        loss = F.cross_entropy(logits, batch.targets.flatten(), label_smoothing=self.label_smoothing, ignore_index=-100)
        return {"ce": self.weight * loss}
