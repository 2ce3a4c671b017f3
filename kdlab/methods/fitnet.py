"""FitNets: a regressor maps the student's guided layer onto the teacher's hint layer (L2)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.core import Batch, DataInfo, Method, Outputs
from kdlab.errors import IncompatibleError
from kdlab.methods import register_method
from kdlab.methods._connectors import as_tokens, connector_for, require_teacher, resolve_pairs, stage_keys


def fitnet_loss(student_hint: Tensor, teacher_hint: Tensor) -> Tensor:
    """Hint loss: mean over all elements of ``(r(v) − u)²``.

    ``student_hint`` is the regressor's output r(v), already in the teacher's shape; the paper's
    ½‖u − r(v)‖² is taken per element without the ½ (as in RepDistiller and mdistiller, whose
    weight of 100 assumes this normalisation).
    """
    return F.mse_loss(student_hint, teacher_hint.to(student_hint.dtype))


def middle_stage(outputs: Outputs) -> str | None:
    """The middle ``layer{i}`` (``layer2`` of three or four stages), or None without stages."""
    keys = stage_keys(outputs)
    return keys[(len(keys) - 1) // 2] if keys else None


@register_method("fitnet")
class FitNet(Method):
    """FitNets: Hints for Thin Deep Nets (Romero, Ballas, Kahou, Chassang, Gatta, Bengio; ICLR 2015).

    loss = weight · mean((r(student[hint]) − teacher[hint])²), with r a learned regressor:
    resample to the teacher's spatial size, 1×1 conv to its channels, BN, ReLU (the ReLU is
    dropped when the hint is a ``*_preact`` feature, which can be negative). 2-D features get a
    Linear + BN (+ ReLU) regressor instead; token features ``[B, N, D]`` (either side; a map
    facing tokens is read as H·W tokens) a token-count resampling + Linear + LayerNorm one.

    hint_layer: feature name (same on both sides) or ``"student_key:teacher_key"``; default the
    middle stage of each network (``layer2`` of a 3-stage ResNet, RepDistiller's ``hint_layer=2``).
    weight: 100 (RepDistiller / mdistiller CIFAR-100 setting).

    The paper trains in two stages (hint pre-training of the lower student layers, then KD);
    like RepDistiller and mdistiller this applies the hint loss jointly with the other terms for
    the whole run. For a student 2× larger than the teacher spatially, the reference regressor
    is a strided 3×3 conv; here the map is average-pooled first (see ``_connectors``).
    """

    needs = frozenset({"features:*"})
    family = "feature"

    def __init__(self, hint_layer: str | None = None, weight: float = 100.0, kernel_size: int = 1) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        self.hint_layer, self.weight, self.kernel_size = hint_layer, weight, kernel_size
        self.regressor: nn.Module | None = None
        self.pair: tuple[str, str] | None = None

    def prepare(self, student: Outputs, teacher: Outputs | None, info: DataInfo) -> None:
        teacher = require_teacher("FitNet", teacher)
        if self.hint_layer is None:
            s_key, t_key = middle_stage(student), middle_stage(teacher)
            if s_key is None or t_key is None:
                raise IncompatibleError(
                    f"FitNet needs stage features 'layer1'..'layerN' on both sides (or hint_layer=...); "
                    f"the student has {sorted(student.features)} and the teacher {sorted(teacher.features)}")
            layers = [f"{s_key}:{t_key}"]
        else:
            layers = [self.hint_layer]
        (s_key, t_key), = resolve_pairs("FitNet", student, teacher, layers)
        s, t = student.features[s_key], teacher.features[t_key]
        relu = not t_key.endswith("_preact")
        self.regressor = connector_for("FitNet", s_key, s, t, kernel_size=self.kernel_size, bn=True, relu=relu,
                                       tokens=True)
        self.pair = (s_key, t_key)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        if self.regressor is None or self.pair is None:
            raise RuntimeError("FitNet.prepare() must run before forward()")
        assert teacher is not None
        s_key, t_key = self.pair
        hint = self.regressor(student.features[s_key])
        target = teacher.features[t_key]
        if hint.dim() == 3:  # a token connector: a teacher map is compared as H·W tokens
            target = as_tokens(target)
        return {"fitnet": self.weight * fitnet_loss(hint, target)}
