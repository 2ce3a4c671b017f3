"""Random crop with zero padding and horizontal flip, written as batched tensor ops.

The parameters of each sample's augmentation are a pure function of ``(seed, index, view)``
(a small integer hash), not of a stateful RNG: any view a model saw can be replayed exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

_M = (1 << 61) - 1


@dataclass(frozen=True)
class Augment:
    pad: int = 4
    flip: bool = True


def _hash(seed: int, index: Tensor, view: Tensor, salt: int) -> Tensor:
    """Deterministic pseudo-random int64 per sample (splitmix-style mixing, kept below 2^61)."""
    h = (index.long() * 0x9E3779B1 + view.long() * 0x85EBCA77 + (seed * 0xC2B2AE3D + salt * 0x27D4EB2F) % _M) % _M
    for mult in (0xBF58476D, 0x94D049BB):
        h = (h ^ (h >> 31)) * mult % _M
    return h ^ (h >> 29)


def augment_params(index: Tensor, view: Tensor, seed: int, cfg: Augment) -> Tensor:
    """``[B, 3]`` int64: (dy, dx, flip) with dy, dx in [0, 2·pad] and flip in {0, 1}."""
    span = 2 * cfg.pad + 1
    dy = _hash(seed, index, view, 1) % span
    dx = _hash(seed, index, view, 2) % span
    flip = _hash(seed, index, view, 3) % 2 if cfg.flip else torch.zeros_like(dy)
    return torch.stack([dy, dx, flip], 1)


def apply_params(x: Tensor, params: Tensor, pad: int) -> Tensor:
    """x ``[B, C, H, W]`` (normalised), params ``[B, 3]`` → augmented ``[B, C, H, W]``."""
    B, C, H, W = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    rows = params[:, 0:1] + torch.arange(H).view(1, H)  # [B, H]
    cols = params[:, 1:2] + torch.arange(W).view(1, W)  # [B, W]
    flip = params[:, 2].bool()
    cols = torch.where(flip.view(B, 1), cols.flip(1), cols)
    bidx = torch.arange(B).view(B, 1, 1)
    out = xp.permute(0, 2, 3, 1)[bidx, rows.view(B, H, 1), cols.view(B, 1, W)]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


def augment(x: Tensor, index: Tensor, view: Tensor, seed: int, cfg: Augment) -> Tensor:
    return apply_params(x, augment_params(index, view, seed, cfg), cfg.pad)
