"""Knowledge review: each teacher stage is matched by a fusion of the student's same and deeper
stages (attention-based fusion, ABF), compared with a hierarchical context loss (HCL)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.core import Batch, DataInfo, Method, Outputs
from kdlab.errors import IncompatibleError
from kdlab.methods import register_method
from kdlab.methods._connectors import require_4d, require_teacher, resolve_pairs, shape_of


def hcl_loss(f_s: Sequence[Tensor], f_t: Sequence[Tensor], levels: Sequence[int] = (4, 2, 1)) -> Tensor:
    """Hierarchical context loss, summed over feature levels.

    Per level: MSE of the full maps (weight 1), plus the MSE of both maps average-pooled to
    l×l for each l in ``levels`` smaller than the map's height (weights 1/2, 1/4, …); the
    weighted sum is divided by the sum of the weights used.
    """
    total = f_s[0].new_zeros(())
    for s, t in zip(f_s, f_t):
        t = t.to(s.dtype)
        loss = F.mse_loss(s, t)
        w, tot = 1.0, 1.0
        for l in levels:
            if l >= s.shape[2]:
                continue
            w /= 2.0
            loss = loss + w * F.mse_loss(F.adaptive_avg_pool2d(s, (l, l)), F.adaptive_avg_pool2d(t, (l, l)))
            tot += w
        total = total + loss / tot
    return total


class ABF(nn.Module):
    """Attention-based fusion of one student level with the fused deeper levels.

    x → 1×1 conv + BN (mid channels); if ``fuse``: the deeper residual y is resized (nearest) to
    x's size and x ← x·a₀ + y·a₁, (a₀, a₁) = sigmoid(1×1 conv([x, y])) per position; the result
    is resized (nearest) to the teacher's size and is the residual passed to the next level;
    the output is 3×3 conv + BN of it, with the teacher's channels.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        conv1 = nn.Conv2d(in_channels, mid_channels, 1, bias=False)
        self.conv1 = nn.Sequential(conv1, nn.BatchNorm2d(mid_channels))
        conv2 = nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Sequential(conv2, nn.BatchNorm2d(out_channels))
        self.att_conv = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(conv1.weight, a=1)
        nn.init.kaiming_uniform_(conv2.weight, a=1)

    def forward(self, x: Tensor, residual: Tensor | None, out_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        h, w = x.shape[-2:]
        x = self.conv1(x)
        if self.att_conv is not None:
            if residual is None:
                raise ValueError("a fusing ABF needs the residual of the deeper level")
            y = F.interpolate(residual, size=(h, w), mode="nearest")
            z = self.att_conv(torch.cat([x, y], dim=1))
            x = x * z[:, 0:1] + y * z[:, 1:2]
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode="nearest")
        return self.conv2(x), x


def _as_map(f: Tensor) -> Tensor:
    return f[:, :, None, None] if f.dim() == 2 else f


@register_method("reviewkd")
class ReviewKD(Method):
    """Distilling Knowledge via Knowledge Review (Chen, Liu, Zhao, Jia; CVPR 2021).

    Student levels (every stage, shallow to deep, then ``pooled`` as a 1×1 map) go through ABF
    modules from the deepest level up, each fusing its level with the deeper ones; level i's
    output is compared with teacher level i (``layer{i}_preact`` and ``pooled``, as in the
    reference) by the HCL with pyramid levels (4, 2, 1):
    loss = weight · min((epoch + 1) / warmup_epochs, 1) · Σ_i HCL_i.

    layers: stage names (``"s_key:t_key"`` to pair different names), default every stage both
    networks share, aligned from the deepest. weight = 1, warmup_epochs = 20 (epochs counted
    from 1 as in the reference; set by ``set_progress``, epoch 0 until then), mid_channels = 512
    (the ABF width is min(512, the deepest student level's channels)). teacher_preact: compare
    with the teacher's pre-ReLU stage features (reference) or its post-ReLU ones;
    student_preact: feed the student's pre-ReLU features (reference default: post-ReLU).
    Sizes: the residual is resized to each student level, each output to the teacher level's size.
    """

    needs = frozenset({"features:*"})
    family = "feature"

    def __init__(self, weight: float = 1.0, warmup_epochs: int = 20, layers: tuple[str, ...] | None = None,
                 include_pooled: bool = True, teacher_preact: bool = True, student_preact: bool = False,
                 mid_channels: int = 512, hcl_levels: tuple[int, ...] = (4, 2, 1)) -> None:
        super().__init__()
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        if mid_channels < 1:
            raise ValueError(f"mid_channels must be >= 1, got {mid_channels}")
        self.weight, self.warmup_epochs = weight, warmup_epochs
        self.layers = None if layers is None else tuple(layers)
        self.include_pooled, self.teacher_preact, self.student_preact = include_pooled, teacher_preact, student_preact
        self.mid_channels, self.hcl_levels = mid_channels, tuple(hcl_levels)
        self.pairs: list[tuple[str, str]] = []
        self.out_sizes: list[tuple[int, int]] = []
        self.abfs = nn.ModuleList()
        self.epoch = 0

    def _keys(self, student: Outputs, teacher: Outputs) -> list[tuple[str, str]]:
        base = resolve_pairs("ReviewKD", student, teacher, self.layers)
        pairs = [(s + ("_preact" if self.student_preact else ""), t + ("_preact" if self.teacher_preact else ""))
                 for s, t in base]
        if self.include_pooled:
            pairs.append(("pooled", "pooled"))
        for s, t in pairs:
            for side, out, key, flag in (("student", student, s, "student_preact"),
                                         ("teacher", teacher, t, "teacher_preact")):
                if key not in out.features:
                    raise IncompatibleError(
                        f"ReviewKD needs feature {key!r} but the {side} only has {sorted(out.features)}"
                        + (f" (set {flag}=False to use the post-ReLU features)" if key.endswith("_preact") else ""))
        return pairs

    def prepare(self, student: Outputs, teacher: Outputs | None, info: DataInfo) -> None:
        teacher = require_teacher("ReviewKD", teacher)
        pairs = self._keys(student, teacher)
        s_feats, t_feats = [], []
        for s_key, t_key in pairs:
            s, t = student.features[s_key], teacher.features[t_key]
            name = s_key if s_key == t_key else f"{s_key}:{t_key}"
            if s_key == "pooled":
                if s.dim() != 2 or t.dim() != 2:
                    raise IncompatibleError(
                        f"ReviewKD needs feature 'pooled' as [B, D] on both sides, got student {shape_of(s)} "
                        f"and teacher {shape_of(t)}")
            else:
                require_4d("ReviewKD", name, s, t)
            s_feats.append(_as_map(s))
            t_feats.append(_as_map(t))
        mid = min(self.mid_channels, s_feats[-1].shape[1])
        device = s_feats[0].device
        self.abfs = nn.ModuleList(
            ABF(s.shape[1], mid, t.shape[1], fuse=i < len(s_feats) - 1).to(device)
            for i, (s, t) in enumerate(zip(s_feats, t_feats)))
        self.out_sizes = [(int(t.shape[-2]), int(t.shape[-1])) for t in t_feats]
        self.pairs = pairs

    def fused(self, student: Outputs) -> list[Tensor]:
        """The ABF outputs, shallow to deep, each in the shape of its teacher level."""
        xs = [_as_map(student.features[s]) for s, _ in self.pairs]
        outs: list[Tensor] = []
        residual: Tensor | None = None
        for i in reversed(range(len(xs))):
            y, residual = self.abfs[i](xs[i], residual, self.out_sizes[i])
            outs.append(y)
        return outs[::-1]

    def warmup_factor(self) -> float:
        if self.warmup_epochs == 0:
            return 1.0
        return min((self.epoch + 1) / self.warmup_epochs, 1.0)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        if not self.pairs:
            raise RuntimeError("ReviewKD.prepare() must run before forward()")
        assert teacher is not None
        targets = [_as_map(teacher.features[t]) for _, t in self.pairs]
        loss = hcl_loss(self.fused(student), targets, self.hcl_levels)
        return {"reviewkd": self.weight * self.warmup_factor() * loss}
