"""FSP: match the "flow of solution procedure" (Gram matrices between consecutive stages)."""
from __future__ import annotations

from torch import Tensor, nn

from kdlab.core import Batch, DataInfo, Method, Outputs
from kdlab.errors import IncompatibleError
from kdlab.methods import register_method
from kdlab.methods._connectors import (
    common_size,
    conv_connector,
    match_spatial,
    require_4d,
    require_teacher,
    resolve_pairs,
    stage_keys,
)


def fsp_matrix(f1: Tensor, f2: Tensor) -> Tensor:
    """G[b, i, j] = Σ_{h,w} f1[b, i, h, w] · f2[b, j, h, w] / (h·w): ``[B, C1, C2]``.

    The spatially larger map of the pair is average-pooled to the smaller first.
    """
    size = common_size(f1, f2)
    a = match_spatial(f1, size).flatten(2)
    b = match_spatial(f2, size).flatten(2)
    return a @ b.transpose(1, 2) / a.shape[-1]


def fsp_loss(g_s: Tensor, g_t: Tensor) -> Tensor:
    """mean((G_S − G_T)²) over batch and matrix entries."""
    return (g_s - g_t.to(g_s.dtype)).pow(2).mean()


def default_sequence(outputs: Outputs) -> list[str]:
    return (["stem"] if "stem" in outputs.features else []) + stage_keys(outputs)


@register_method("fsp")
class FSP(Method):
    """A Gift from Knowledge Distillation: Fast Optimization, Network Minimization and Transfer Learning
    (Yim, Joo, Bae, Kim; CVPR 2017).

    loss = weight · Σ_i mean((G_S^i − G_T^i)²), G^i the FSP matrix between consecutive features
    i and i+1 of the sequence (default ``stem`` when both networks have one, then every stage;
    aligned from the deepest when the depths differ). Within a pair the larger map is
    average-pooled to the smaller one.

    Channels: the FSP matrices must have the same size, so a student feature whose channel count
    differs from the teacher's goes through a learned 1×1 conv + BN first (the paper and
    RepDistiller require equal channels instead).

    Schedule: the paper (and RepDistiller) first minimises the FSP loss alone, then trains the
    task without it. ``init_epochs=None`` (default) keeps the term on for the whole run, jointly
    with the other terms; ``init_epochs=N`` applies it during the first N epochs only (the other
    terms still run then). weight = 50 (RepDistiller's script value).
    """

    needs = frozenset({"features:*"})
    family = "feature"

    def __init__(self, weight: float = 50.0, layers: tuple[str, ...] | None = None,
                 init_epochs: int | None = None) -> None:
        super().__init__()
        if init_epochs is not None and init_epochs < 0:
            raise ValueError(f"init_epochs must be >= 0, got {init_epochs}")
        self.weight, self.init_epochs = weight, init_epochs
        self.layers = None if layers is None else tuple(layers)
        self.seq: list[tuple[str, str]] = []
        self.connectors = nn.ModuleList()
        self.epoch = 0

    def prepare(self, student: Outputs, teacher: Outputs | None, info: DataInfo) -> None:
        teacher = require_teacher("FSP", teacher)
        if self.layers is None:
            s_seq, t_seq = default_sequence(student), default_sequence(teacher)
            if ("stem" in s_seq) != ("stem" in t_seq):
                s_seq = [k for k in s_seq if k != "stem"]
                t_seq = [k for k in t_seq if k != "stem"]
            k = min(len(s_seq), len(t_seq))
            layers = [f"{s}:{t}" for s, t in zip(s_seq[len(s_seq) - k:], t_seq[len(t_seq) - k:])]
        else:
            layers = list(self.layers)
        seq = resolve_pairs("FSP", student, teacher, layers)
        if len(seq) < 2:
            raise IncompatibleError(
                f"FSP needs at least two consecutive features on both sides, got {[s for s, _ in seq]} "
                f"(the student has {sorted(student.features)}, the teacher {sorted(teacher.features)})")
        self.connectors = nn.ModuleList()
        for s_key, t_key in seq:
            s, t = student.features[s_key], teacher.features[t_key]
            require_4d("FSP", s_key if s_key == t_key else f"{s_key}:{t_key}", s, t)
            if s.shape[1] == t.shape[1]:
                self.connectors.append(nn.Identity())
            else:
                self.connectors.append(conv_connector(s.shape[1], t.shape[1]).to(s.device))
        self.seq = seq

    def active(self) -> bool:
        return self.init_epochs is None or self.epoch < self.init_epochs

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        if not self.seq:
            raise RuntimeError("FSP.prepare() must run before forward()")
        assert teacher is not None
        if not self.active():
            return {}
        fs = [c(student.features[s]) for c, (s, _) in zip(self.connectors, self.seq)]
        ft = [teacher.features[t] for _, t in self.seq]
        total = sum(fsp_loss(fsp_matrix(fs[i], fs[i + 1]), fsp_matrix(ft[i], ft[i + 1]))
                    for i in range(len(self.seq) - 1))
        return {"fsp": self.weight * total}  # type: ignore[dict-item]

