"""Correlation congruence: match the batch correlation matrices under a Taylor-expanded Gaussian RBF kernel."""
from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.core import Batch, DataInfo, Method, Outputs
from kdlab.methods import register_method

EMBED_MODES = ("student", "both", "none")


def rbf_correlation(f: Tensor, gamma: float = 0.4, P: int = 2) -> Tensor:
    """``[B, B]`` correlations k(x, y) = exp(−γ‖x̂ − ŷ‖²) ≈ Σ_{p=0}^{P} e^{−2γ} (2γ)^p / p! · (x̂·ŷ)^p,
    x̂ the L2-normalised rows (so ‖x̂ − ŷ‖² = 2 − 2 x̂·ŷ and the expansion is that of e^{2γ x̂·ŷ})."""
    f = F.normalize(f.reshape(f.shape[0], -1), p=2, dim=1)
    sim = f @ f.t()
    corr = sim.new_zeros(sim.shape)
    for p in range(P + 1):
        corr = corr + math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * sim.pow(p)
    return corr


def cc_loss(student: Tensor, teacher: Tensor, gamma: float = 0.4, P: int = 2) -> Tensor:
    """‖ψ(F_t) − ψ(F_s)‖² / B² with ψ the kernel correlation matrix (Peng et al., Eq. 6)."""
    return F.mse_loss(rbf_correlation(student, gamma, P), rbf_correlation(teacher.to(student.dtype), gamma, P))


@register_method("cc")
class CC(Method):
    """Correlation Congruence for Knowledge Distillation (Peng, Jin, Liu, Zhou, Wu, Liu, Li, Zhang; ICCV 2019).

    loss = weight · ‖ψ(e_t) − ψ(e_s)‖²/B² (the correlation-congruence term only; pair with ``kd``
    for the paper's full CCKD objective), ψ the Gaussian RBF kernel matrix expanded to order P=2
    with γ=0.4, on ``pooled`` embeddings passed through a linear embed connector built in
    :meth:`prepare`. ``embed``: ``"student"`` (default; a learnable Linear(D_s → feat_dim) on the
    student, the frozen teacher's embedding used as is), ``"both"`` (RepDistiller's layout: a
    learnable Linear(· → feat_dim) on each side; the teacher-side head is then trained by this loss
    too, which lets both heads drift towards each other) or ``"none"`` (the kernel on raw features,
    as Knowledge-Distillation-Zoo). Kernel matrices are B×B, so widths may differ. weight 100 is
    Knowledge-Distillation-Zoo's setting for this kernel loss (RepDistiller's 0.02 belongs to a
    different, element-wise CC loss); no special batch sampling is done.
    """

    needs = frozenset({"pooled"})
    family = "relation"

    def __init__(self, gamma: float = 0.4, P: int = 2, feat_dim: int = 128, embed: str = "student",
                 weight: float = 100.0) -> None:
        super().__init__()
        if embed not in EMBED_MODES:
            raise ValueError(f"embed must be one of {EMBED_MODES}, got {embed!r}")
        if P < 0 or feat_dim < 1:
            raise ValueError(f"need P >= 0 and feat_dim >= 1, got P={P}, feat_dim={feat_dim}")
        self.gamma, self.P, self.feat_dim, self.embed, self.weight = gamma, P, feat_dim, embed, weight
        self.embed_s: nn.Module = nn.Identity()
        self.embed_t: nn.Module = nn.Identity()
        self._ready = False

    def prepare(self, student: Outputs, teacher: Outputs | None, info: DataInfo) -> None:
        super().prepare(student, teacher, info)
        assert teacher is not None
        s, t = student.features["pooled"], teacher.features["pooled"]
        if self.embed in ("student", "both"):
            self.embed_s = nn.Linear(s[0].numel(), self.feat_dim).to(device=s.device, dtype=s.dtype)
        if self.embed == "both":
            self.embed_t = nn.Linear(t[0].numel(), self.feat_dim).to(device=s.device, dtype=s.dtype)
        self._ready = True

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        if not self._ready:
            raise RuntimeError("CC.prepare() must run before forward()")
        assert teacher is not None
        s = student.features["pooled"]
        es = self.embed_s(s.flatten(1))
        et = self.embed_t(teacher.features["pooled"].flatten(1).to(s.dtype))
        return {"cc": self.weight * cc_loss(es, et, self.gamma, self.P)}
