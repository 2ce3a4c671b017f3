"""Activation boundaries: make the student's pre-ReLU responses fall on the same side of zero
as the teacher's, with a margin."""
from __future__ import annotations

from torch import Tensor, nn

from kdlab.core import Batch, DataInfo, Method, Outputs
from kdlab.methods import register_method
from kdlab.methods._connectors import connector_for, require_teacher, resolve_pairs


def ab_loss(source: Tensor, target: Tensor, margin: float = 1.0) -> Tensor:
    """The alternative (hinge-squared) AB loss, summed over neurons and averaged over the batch.

    ``source``: the connector's output for the student pre-ReLU feature; ``target``: the teacher's
    pre-ReLU feature (only its sign is used). Per element:
    ``(s + μ)² · 1[s > −μ, t ≤ 0] + (s − μ)² · 1[s ≤ μ, t > 0]``.
    """
    t = target.to(source.dtype)
    off = ((source + margin).pow(2) * ((source > -margin) & (t <= 0)).to(source.dtype)
           + (source - margin).pow(2) * ((source <= margin) & (t > 0)).to(source.dtype))
    return off.sum() / source.shape[0]


@register_method("ab")
class AB(Method):
    """Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden Neurons
    (Heo, Lee, Yun, Choi; AAAI 2019).

    loss = weight · Σ_i 2^−(N−1−i) · ab_loss(C_i(student ``layer{i}_preact``), teacher
    ``layer{i}_preact``), margin μ = 1: the deepest stage counts fully, each shallower one half
    as much (the authors' code). C_i is the identity when the shapes already agree, otherwise
    1×1 conv + BN (He init) after resampling to the teacher's spatial size.

    layers: stage names (``_preact`` is appended), default every stage both networks share,
    aligned from the deepest. weight = 3e-3: the authors' CIFAR code and RepDistiller scale the
    summed loss by 3/1000.

    Schedule: the paper uses the AB loss to initialise the student before training on the task
    (the authors' code and RepDistiller drop it afterwards). ``init_epochs=None`` (default) keeps
    it on for the whole run jointly with the other terms; ``init_epochs=N`` applies it during the
    first N epochs only (the other terms still run then).
    """

    needs = frozenset({"features:*"})
    family = "feature"

    def __init__(self, margin: float = 1.0, weight: float = 3e-3, layers: tuple[str, ...] | None = None,
                 init_epochs: int | None = None) -> None:
        super().__init__()
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        if init_epochs is not None and init_epochs < 0:
            raise ValueError(f"init_epochs must be >= 0, got {init_epochs}")
        self.margin, self.weight, self.init_epochs = margin, weight, init_epochs
        self.layers = None if layers is None else tuple(layers)
        self.pairs: list[tuple[str, str]] = []
        self.connectors = nn.ModuleList()
        self.epoch = 0

    def prepare(self, student: Outputs, teacher: Outputs | None, info: DataInfo) -> None:
        teacher = require_teacher("AB", teacher)
        pairs = resolve_pairs("AB", student, teacher, self.layers, suffix="_preact")
        self.connectors = nn.ModuleList(
            connector_for("AB", s if s == t else f"{s}:{t}", student.features[s], teacher.features[t],
                          bn=True, identity_if_same=True)
            for s, t in pairs)
        self.pairs = pairs

    def active(self) -> bool:
        return self.init_epochs is None or self.epoch < self.init_epochs

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        if not self.pairs:
            raise RuntimeError("AB.prepare() must run before forward()")
        assert teacher is not None
        if not self.active():
            return {}
        n = len(self.pairs)
        total = sum(ab_loss(c(student.features[s]), teacher.features[t], self.margin) / 2 ** (n - 1 - i)
                    for i, ((s, t), c) in enumerate(zip(self.pairs, self.connectors)))
        return {"ab": self.weight * total}
