"""Shared pieces for feature-based methods (not a method).

* :func:`stage_keys` — the ``layer{i}`` features an output has, in depth order.
* :func:`resolve_pairs` — which student feature is compared with which teacher feature.
* :func:`match_spatial` / :func:`common_size` — resampling maps to a size.
* :func:`as_tokens` / :func:`match_tokens` — token features ``[B, N, D]`` (a map becomes ``H·W``
  tokens of ``C`` values) and resampling of the token count.
* :func:`conv_connector`, :class:`Connector`, :class:`TokenConnector`, :func:`connector_for` —
  learnable adapters from the student's shape to the teacher's.
* :func:`require_teacher`, :func:`require_4d`, :func:`require_same_rank` — IncompatibleError
  with the method, the feature and both shapes in the message.

Spatial policy. Connectors (learnable) bring the student map to the *teacher's* size:
adaptive average pooling when the teacher's map is no larger in both dimensions (16×16 → 8×8 is a
2×2 average), bilinear interpolation otherwise (a 28-input student's 7×7 map → a 32-input
teacher's 8×8). Parameter-free comparisons (AT, NST, FSP) instead
average-pool the larger map down to the smaller one, as the reference implementations do.

Tokens. Transformer features are ``[B, N, D]``. A token connector resamples the student's token
count to the teacher's (adaptive average pooling over the token axis when shrinking, linear
interpolation when growing) and projects ``D_s → D_t`` with a Linear layer. A CNN map facing a
token feature is read as ``H·W`` tokens of ``C`` values (row-major), so CNN ↔ transformer pairs
connect too. Token order is kept, so the resampling suits patch tokens and sequences of the
same tokenizer; a class token counts as a token.
"""
from __future__ import annotations

import math
import re
from typing import Iterable, Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.core import Outputs
from kdlab.errors import IncompatibleError

_STAGE = re.compile(r"^layer(\d+)$")


def _features(x: Outputs | Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    return x.features if isinstance(x, Outputs) else x


def stage_keys(outputs: Outputs | Mapping[str, Tensor], suffix: str = "") -> list[str]:
    """The ``layer{i}`` names (not ``stem`` or ``pooled``), shallow to deep, for which
    ``layer{i}{suffix}`` is present (``suffix="_preact"``: stages with a pre-ReLU feature)."""
    feats = _features(outputs)
    keys = [k[: len(k) - len(suffix)] for k in feats if k.endswith(suffix)]
    keys = [k for k in keys if _STAGE.match(k)]
    return sorted(keys, key=lambda k: int(_STAGE.match(k).group(1)))  # type: ignore[union-attr]


def shape_of(x: Tensor) -> tuple[int, ...]:
    return tuple(int(d) for d in x.shape)


def require_teacher(method: str, teacher: Outputs | None) -> Outputs:
    if teacher is None:
        raise IncompatibleError(f"{method} needs a teacher")
    return teacher


def resolve_pairs(method: str, student: Outputs, teacher: Outputs,
                  layers: Sequence[str] | None, suffix: str = "") -> list[tuple[str, str]]:
    """``[(student_key, teacher_key), ...]`` to compare, shallow to deep.

    ``layers=None``: every stage both sides have (with ``suffix``), aligned from the deepest (a
    3-stage student and a 4-stage teacher pair ``layer1..3`` with the teacher's ``layer2..4``). Otherwise each
    entry is ``"layer2"`` (same name on both sides) or ``"layer2:layer3"`` (student:teacher).
    ``suffix`` (e.g. ``"_preact"``) is appended to every key; missing keys raise IncompatibleError.
    """
    if layers is None:
        s_keys, t_keys = stage_keys(student, suffix), stage_keys(teacher, suffix)
        k = min(len(s_keys), len(t_keys))
        if k == 0:
            raise IncompatibleError(
                f"{method} needs stage features 'layer1{suffix}'..'layerN{suffix}' on both sides; the student has "
                f"{sorted(student.features)} and the teacher {sorted(teacher.features)}")
        pairs = list(zip(s_keys[len(s_keys) - k:], t_keys[len(t_keys) - k:]))
    else:
        if isinstance(layers, str):
            layers = [layers]
        pairs = []
        for entry in layers:
            s, _, t = str(entry).partition(":")
            pairs.append((s, t or s))
        if not pairs:
            raise IncompatibleError(f"{method}: no features selected (layers is empty)")
    pairs = [(s + suffix, t + suffix) for s, t in pairs]
    for s, t in pairs:
        for side, out, key in (("student", student, s), ("teacher", teacher, t)):
            if key not in out.features:
                raise IncompatibleError(
                    f"{method} needs feature {key!r} but the {side} only has {sorted(out.features)}")
    return pairs


def require_4d(method: str, key: str, s: Tensor, t: Tensor) -> None:
    """IncompatibleError unless both ``s`` and ``t`` are ``[B, C, H, W]`` maps."""
    if s.dim() != 4 or t.dim() != 4:
        raise IncompatibleError(
            f"{method} needs 4-D feature maps [B, C, H, W] for feature {key!r}, got student "
            f"{shape_of(s)} and teacher {shape_of(t)}")


def require_same_rank(method: str, key: str, s: Tensor, t: Tensor, tokens: bool = False) -> None:
    """IncompatibleError unless both are 4-D maps or both are 2-D vectors (``tokens``: or both are
    maps / ``[B, N, D]`` token features, at least one of them tokens)."""
    ok = s.dim() == t.dim() and s.dim() in (2, 4)
    if tokens:
        ok = ok or ({s.dim(), t.dim()} <= {3, 4} and 3 in (s.dim(), t.dim()))
    if not ok:
        raise IncompatibleError(
            f"{method} cannot connect student feature {key!r} of shape {shape_of(s)} to a teacher "
            f"feature of shape {shape_of(t)}: both must be 4-D maps or both 2-D vectors"
            + (", or tokens [B, N, D] facing tokens or a map" if tokens else ""))


def common_size(a: Tensor, b: Tensor) -> tuple[int, int]:
    """The element-wise smaller spatial size of two 4-D maps."""
    return min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1])


def match_spatial(x: Tensor, size: Iterable[int]) -> Tensor:
    """Resample ``[B, C, H, W]`` to ``size`` (h, w).

    Unchanged when equal; adaptive average pooling when shrinking (or keeping) both dimensions;
    bilinear interpolation (``align_corners=False``) when either dimension grows.
    """
    h, w = (int(v) for v in size)
    H, W = x.shape[-2], x.shape[-1]
    if (H, W) == (h, w):
        return x
    if h <= H and w <= W:
        return F.adaptive_avg_pool2d(x, (h, w))
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


def as_tokens(x: Tensor) -> Tensor:
    """``[B, C, H, W]`` → ``[B, H·W, C]`` (row-major positions); ``[B, N, D]`` unchanged."""
    return x.flatten(2).transpose(1, 2) if x.dim() == 4 else x


def match_tokens(x: Tensor, n: int) -> Tensor:
    """Resample ``[B, N, D]`` to ``n`` tokens along the token axis: unchanged when equal, adaptive
    average pooling when shrinking, linear interpolation (``align_corners=False``) when growing."""
    N = x.shape[1]
    if N == n:
        return x
    y = x.transpose(1, 2)  # [B, D, N]
    y = F.adaptive_avg_pool1d(y, n) if n < N else F.interpolate(y, size=n, mode="linear", align_corners=False)
    return y.transpose(1, 2)


def he_init_(modules: Iterable[nn.Module]) -> None:
    """Conv weights ~ N(0, 2 / (k·k·C_out)), BN γ = 1, β = 0 (the init of the OFD/AB connectors)."""
    for m in modules:
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def conv_connector(cin: int, cout: int, kernel_size: int = 1, bn: bool = True, relu: bool = False) -> nn.Sequential:
    """Conv (``kernel_size``, same padding; bias only without BN) [+ BN] [+ ReLU], He-initialised."""
    mods: list[nn.Module] = [nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=not bn)]
    if bn:
        mods.append(nn.BatchNorm2d(cout))
    if relu:
        mods.append(nn.ReLU())
    seq = nn.Sequential(*mods)
    he_init_(seq)
    return seq


def linear_connector(din: int, dout: int, bn: bool = True, relu: bool = False) -> nn.Sequential:
    """Linear [+ BN1d] [+ ReLU] for 2-D features."""
    mods: list[nn.Module] = [nn.Linear(din, dout, bias=not bn)]
    if bn:
        mods.append(nn.BatchNorm1d(dout))
    if relu:
        mods.append(nn.ReLU())
    return nn.Sequential(*mods)


class Connector(nn.Module):
    """``[B, Cs, Hs, Ws] -> [B, Ct, h, w]``: :func:`match_spatial` to ``size``, then a conv connector."""

    def __init__(self, cin: int, cout: int, size: Iterable[int], kernel_size: int = 1,
                 bn: bool = True, relu: bool = False) -> None:
        super().__init__()
        self.size = tuple(int(v) for v in size)
        self.conv = conv_connector(cin, cout, kernel_size, bn, relu)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(match_spatial(x, self.size))


class TokenConnector(nn.Module):
    """``[B, Ns, Ds]`` (or a ``[B, C, H, W]`` map, read as ``H·W`` tokens) → ``[B, Nt, Dt]``:
    :func:`match_tokens` to the teacher's count, then Linear ``Ds → Dt`` [+ LayerNorm] [+ ReLU].
    Compare its output with :func:`as_tokens` of the teacher's feature."""

    def __init__(self, din: int, dout: int, n: int, norm: bool = True, relu: bool = False) -> None:
        super().__init__()
        self.n = int(n)
        mods: list[nn.Module] = [nn.Linear(din, dout)]
        if norm:
            mods.append(nn.LayerNorm(dout))
        if relu:
            mods.append(nn.ReLU())
        self.proj = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(match_tokens(as_tokens(x), self.n))


def connector_for(method: str, key: str, s: Tensor, t: Tensor, *, kernel_size: int = 1, bn: bool = True,
                  relu: bool = False, identity_if_same: bool = False, tokens: bool = False) -> nn.Module:
    """A learnable adapter from the student feature ``s`` to the teacher feature ``t``'s shape.

    4-D → 4-D: :class:`Connector` (resample to the teacher's size, conv to its channels).
    2-D → 2-D: :func:`linear_connector`. With ``tokens`` (for methods whose loss compares any
    shape), tokens ``[B, N, D]`` on either side, the other side tokens or a map:
    :class:`TokenConnector` to ``as_tokens(t)``'s shape, its normalisation a LayerNorm where
    ``bn`` asks for one. ``identity_if_same``: ``nn.Identity`` when the shapes already agree
    (as in the AB reference). Built on ``s``'s device. Other ranks raise IncompatibleError.
    """
    require_same_rank(method, key, s, t, tokens=tokens)
    if identity_if_same and s.shape[1:] == t.shape[1:]:
        return nn.Identity()
    if 3 in (s.dim(), t.dim()):
        tt = as_tokens(t)
        # transformer tokens are signed: a ReLU only where the teacher side is a (post-ReLU) map
        return TokenConnector(as_tokens(s).shape[-1], tt.shape[-1], tt.shape[1], bn, relu and t.dim() == 4).to(s.device)
    if s.dim() == 4:
        m: nn.Module = Connector(s.shape[1], t.shape[1], t.shape[-2:], kernel_size, bn, relu)
    else:
        m = linear_connector(s.shape[1], t.shape[1], bn, relu)
    return m.to(s.device)
