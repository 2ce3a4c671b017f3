"""Variational information distillation: maximise a Gaussian variational lower bound on the
mutual information between teacher and student features."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.core import Batch, DataInfo, Method, Outputs
from kdlab.methods import register_method
from kdlab.methods._connectors import match_spatial, require_same_rank, require_teacher, resolve_pairs


def softplus_inverse(y: float) -> float:
    """x with softplus(x) = y (y > 0)."""
    return y + math.log(-math.expm1(-y))


def vid_nll(pred_mean: Tensor, target: Tensor, log_scale: Tensor, eps: float = 1e-5) -> Tensor:
    """Gaussian negative log-likelihood of the teacher feature, without the constant ½·log 2π.

    σ²_c = softplus(log_scale_c) + eps (one variance per channel, shared over positions);
    loss = mean over all elements of ½ · ((μ − t)² / σ²_c + log σ²_c).
    ``pred_mean``/``target`` are ``[B, C, H, W]`` or ``[B, C]``; ``log_scale`` is ``[C]``.
    """
    var = F.softplus(log_scale) + eps
    var = var.view(1, -1, *([1] * (pred_mean.dim() - 2))).to(pred_mean.dtype)
    nll = 0.5 * ((pred_mean - target.to(pred_mean.dtype)).pow(2) / var + torch.log(var))
    return nll.mean()


def _regressor(cin: int, cout: int, mid: int, conv: bool) -> nn.Sequential:
    """The reference's 3-layer 1×1 regressor (no bias): cin → mid → mid → cout with ReLUs."""
    layer: Callable[[int, int], nn.Module]
    if conv:
        layer = lambda i, o: nn.Conv2d(i, o, 1, bias=False)  # noqa: E731
    else:
        layer = lambda i, o: nn.Linear(i, o, bias=False)  # noqa: E731
    return nn.Sequential(layer(cin, mid), nn.ReLU(), layer(mid, mid), nn.ReLU(), layer(mid, cout))


class _Regressor(nn.Module):
    def __init__(self, cin: int, cout: int, size: tuple[int, ...] | None) -> None:
        super().__init__()
        self.size = size
        self.net = _regressor(cin, cout, cout, conv=size is not None)

    def forward(self, x: Tensor) -> Tensor:
        if self.size is not None:
            x = match_spatial(x, self.size)
        return self.net(x)


@register_method("vid")
class VID(Method):
    """Variational Information Distillation for Knowledge Transfer (Ahn, Hu, Damianou, Lawrence, Dai; CVPR 2019).

    loss = weight · Σ_layers −log q(t | s) (up to a constant): a Gaussian q with mean μ(s) from a
    per-layer regressor (1×1 conv → ReLU → 1×1 conv → ReLU → 1×1 conv, teacher channels wide, no
    bias; Linear layers for 2-D features) and a learned per-channel variance
    σ²_c = softplus(α_c) + eps, initialised to ``init_pred_var`` = 5.0; eps = 1e-5.

    layers: default every stage both networks share (aligned from the deepest; the reference
    uses all stage outputs). weight = 1 (RepDistiller / mdistiller). The student map is resampled
    to the teacher's spatial size before the regressor (the reference pools whichever is larger).
    """

    needs = frozenset({"features:*"})
    family = "feature"

    def __init__(self, weight: float = 1.0, init_pred_var: float = 5.0, eps: float = 1e-5,
                 layers: tuple[str, ...] | None = None) -> None:
        super().__init__()
        if init_pred_var <= eps:
            raise ValueError(f"init_pred_var must be > eps ({eps}), got {init_pred_var}")
        self.weight, self.init_pred_var, self.eps = weight, init_pred_var, eps
        self.layers = None if layers is None else tuple(layers)
        self.pairs: list[tuple[str, str]] = []
        self.regressors = nn.ModuleList()
        self.log_scales = nn.ParameterList()

    def prepare(self, student: Outputs, teacher: Outputs | None, info: DataInfo) -> None:
        teacher = require_teacher("VID", teacher)
        pairs = resolve_pairs("VID", student, teacher, self.layers)
        self.regressors, self.log_scales = nn.ModuleList(), nn.ParameterList()
        init = softplus_inverse(self.init_pred_var - self.eps)
        for s_key, t_key in pairs:
            s, t = student.features[s_key], teacher.features[t_key]
            require_same_rank("VID", s_key if s_key == t_key else f"{s_key}:{t_key}", s, t)
            size = tuple(int(v) for v in t.shape[-2:]) if t.dim() == 4 else None
            self.regressors.append(_Regressor(s.shape[1], t.shape[1], size).to(s.device))
            self.log_scales.append(nn.Parameter(torch.full((t.shape[1],), init, device=s.device)))
        self.pairs = pairs

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        if not self.pairs:
            raise RuntimeError("VID.prepare() must run before forward()")
        assert teacher is not None
        total = sum(vid_nll(reg(student.features[s]), teacher.features[t], ls, self.eps)
                    for (s, t), reg, ls in zip(self.pairs, self.regressors, self.log_scales))
        return {"vid": self.weight * total}  # type: ignore[dict-item]
