"""Hidden-state matching between transformer encoders (TinyBERT's hidden-layer loss)."""
from __future__ import annotations

from torch import Tensor, nn

from kdlab.core import Batch, DataInfo, Method, Outputs
from kdlab.errors import IncompatibleError
from kdlab.methods import register_method
from kdlab.methods._connectors import require_teacher
from kdlab.methods._layers import attention_mask, hidden_layers, layer_map, masked_mse


def hidden_loss(student: list[Tensor], teacher: list[Tensor], mask: Tensor) -> Tensor:
    """Σ over mapped pairs of the masked MSE between the projected student state and the teacher
    state (each ``[B, L, D_t]``; ``mask`` ``[B, L]``, 1 = real token). Padding contributes nothing."""
    return sum((masked_mse(s, t, mask) for s, t in zip(student, teacher)), start=mask.new_zeros(()))


@register_method("hidden")
class HiddenStates(Method):
    """TinyBERT: Distilling BERT for Natural Language Understanding (Jiao et al.; Findings of EMNLP 2020).

    loss = weight · Σ_(m, n) MSE(H_S^m W_m, H_T^n) over the real tokens, with ``W_m`` a learned
    linear projection from the student's width to the teacher's (per mapped layer, as ``W_e``/``W_h``)
    and the pairs ``(m, n)`` from ``layer_map`` (``uniform``: TinyBERT's n = m·N/M with the
    embeddings; ``skip``/``last``: PKD's choices). Both models must see the same tokens (the same
    tokenizer); needs ``hidden0..hiddenN`` features (the kdlab text encoders return them).
    """

    needs = frozenset({"features:*"})
    family = "feature"

    def __init__(self, layer_map: str = "uniform", weight: float = 1.0) -> None:
        super().__init__()
        self.layer_map, self.weight = layer_map, weight
        self.pairs: list[tuple[int, int]] = []
        self.proj = nn.ModuleList()

    def prepare(self, student: Outputs, teacher: Outputs | None, info: DataInfo) -> None:
        t = require_teacher("hidden", teacher)
        ns, nt = hidden_layers(student, "student", "hidden"), hidden_layers(t, "teacher", "hidden")
        self.pairs = layer_map(ns, nt, self.layer_map)
        if not self.pairs:
            raise IncompatibleError(f"layer_map={self.layer_map} maps no layer for a {ns}-layer student")
        s0, t0 = student.features["hidden0"], t.features["hidden0"]
        if s0.shape[:2] != t0.shape[:2]:
            raise IncompatibleError(f"hidden needs the same tokens on both sides, got student {tuple(s0.shape[:2])} "
                                    f"and teacher {tuple(t0.shape[:2])} (use the teacher's tokenizer)")
        self.proj = nn.ModuleList(nn.Linear(s0.shape[-1], t0.shape[-1]) for _ in self.pairs)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert teacher is not None
        s = [p(student.features[f"hidden{m}"]) for p, (m, _) in zip(self.proj, self.pairs)]
        t = [teacher.features[f"hidden{n}"] for _, n in self.pairs]
        return {"hidden": self.weight * hidden_loss(s, t, attention_mask(batch, s[0]))}
