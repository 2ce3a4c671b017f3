"""Patient knowledge distillation from intermediate [CLS] states."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.core import Batch, DataInfo, Method, Outputs
from kdlab.errors import IncompatibleError
from kdlab.methods import register_method
from kdlab.methods._connectors import require_teacher
from kdlab.methods._layers import hidden_layers, layer_map


def pkd_loss(student: list[Tensor], teacher: list[Tensor]) -> Tensor:
    """Σ over mapped layers of mean_b ‖s/‖s‖₂ − t/‖t‖₂‖²₂ for [CLS] states ``[B, D]`` (PKD eq. 3)."""
    total = student[0].new_zeros(())
    for s, t in zip(student, teacher):
        d = F.normalize(s, dim=-1) - F.normalize(t.to(s.dtype), dim=-1)
        total = total + (d * d).sum(-1).mean()
    return total


@register_method("pkd")
class PKD(Method):
    """Patient Knowledge Distillation for BERT Model Compression (Sun, Cheng, Gan, Liu; EMNLP 2019).

    loss = weight · Σ_(m, n) mean ‖ĥ_S^m − ĥ_T^n‖² over the L2-normalised states of the first token
    ([CLS]) of the mapped intermediate layers; ``layer_map`` ``skip`` (PKD-Skip) or ``last`` (PKD-Last)
    leaves the output layer to the logit loss, as in the paper (pair with ``kd``). weight: β = 100
    (one of the paper's grid {10, 100, 500, 1000}). When the widths differ, a learned linear
    projection maps the student's state first (the paper's students have the teacher's width).
    The first token is never padding, so the mask is not needed.
    """

    needs = frozenset({"features:*"})
    family = "feature"
    paper_ce = 1.0

    def __init__(self, layer_map: str = "skip", weight: float = 100.0) -> None:
        super().__init__()
        self.layer_map, self.weight = layer_map, weight
        self.pairs: list[tuple[int, int]] = []
        self.proj: nn.Module = nn.Identity()

    def prepare(self, student: Outputs, teacher: Outputs | None, info: DataInfo) -> None:
        t = require_teacher("pkd", teacher)
        ns, nt = hidden_layers(student, "student", "pkd"), hidden_layers(t, "teacher", "pkd")
        self.pairs = layer_map(ns, nt, self.layer_map)
        if not self.pairs:
            raise IncompatibleError(f"pkd with layer_map={self.layer_map} maps no intermediate layer of a {ns}-layer "
                                    "student (it needs at least 2 layers)")
        ds, dt = student.features["hidden0"].shape[-1], t.features["hidden0"].shape[-1]
        if ds != dt:
            self.proj = nn.Linear(ds, dt)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert teacher is not None
        s = [self.proj(student.features[f"hidden{m}"][:, 0]) for m, _ in self.pairs]
        t = [teacher.features[f"hidden{n}"][:, 0] for _, n in self.pairs]
        return {"pkd": self.weight * pkd_loss(s, t)}
