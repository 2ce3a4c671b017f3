"""Random crop with zero padding, horizontal flip and mixup/cutmix, written as batched tensor ops.

The parameters of each sample's augmentation are a pure function of ``(seed, index, view)``
(a small integer hash), not of a stateful RNG: any view a model saw can be replayed exactly. That
includes the mixing partner and λ, so a teacher and its student see exactly the same mixed image
("consistent teaching", Beyer et al., CVPR 2022) and a cache keyed by ``(index, view)`` can hold
the teacher's answer to it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

_M = (1 << 61) - 1


@dataclass(frozen=True)
class Augment:
    pad: int = 4  # random crop after zero padding by this many pixels (0: no crop)
    flip: bool = True
    mix: str = "none"  # none | mixup (Zhang et al. 2018) | cutmix (Yun et al. 2019)
    mix_alpha: float = 1.0  # λ ~ Beta(α, α); 1: λ uniform on [0, 1]
    teacher_view: str = "same"  # same | independent | clean: what a live teacher sees (Batch.teacher_inputs)

    @property
    def crops(self) -> bool:
        return self.pad > 0 or self.flip


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


def _uniform(seed: int, index: Tensor, view: Tensor, salt: int) -> Tensor:
    """A float64 in (0, 1) per sample, from the same hash."""
    return ((_hash(seed, index, view, salt) % (1 << 24)).double() + 0.5) / (1 << 24)


def mix_params(index: Tensor, view: Tensor, seed: int, n: int, cfg: Augment) -> tuple[Tensor, Tensor]:
    """``(partner [B] int64 in [0, n), λ [B] float32)``: whom each sample is mixed with, and how much
    of itself it keeps. λ is drawn from Beta(α, α) by its inverse CDF at a hashed uniform."""
    from scipy.special import betaincinv

    partner = _hash(seed, index, view, 5) % n
    u = _uniform(seed, index, view, 6)
    lam = torch.as_tensor(betaincinv(cfg.mix_alpha, cfg.mix_alpha, u.numpy()), dtype=torch.float32)
    return partner, lam


def mix(x: Tensor, partner_x: Tensor, lam: Tensor, index: Tensor, view: Tensor, seed: int,
        cfg: Augment) -> tuple[Tensor, Tensor]:
    """Mix ``x`` ``[B, ...]`` with ``partner_x`` by ``λ`` ``[B]``. mixup: ``λ·x + (1 − λ)·x_partner``;
    cutmix (images ``[B, C, H, W]``): a box of area ``1 − λ`` at a hashed position is pasted from
    the partner, and λ becomes the exact share of pixels kept. Returns (mixed x, λ used)."""
    if cfg.mix == "mixup":
        shape = (-1,) + (1,) * (x.dim() - 1)
        return lam.view(shape) * x + (1 - lam.view(shape)) * partner_x, lam
    if cfg.mix != "cutmix":
        raise ValueError(f"unknown mix {cfg.mix!r} (none, mixup, cutmix)")
    if x.dim() != 4:
        raise ValueError("cutmix pastes image boxes: it needs [B, C, H, W] inputs (use mixup for vectors)")
    B, _, H, W = x.shape
    r = torch.sqrt(1 - lam.double())
    ch, cw = (r * H).round().long(), (r * W).round().long()
    cy = (_uniform(seed, index, view, 7) * H).long()
    cx = (_uniform(seed, index, view, 8) * W).long()
    y0, y1 = (cy - ch // 2).clamp(0, H), (cy + ch - ch // 2).clamp(0, H)
    x0, x1 = (cx - cw // 2).clamp(0, W), (cx + cw - cw // 2).clamp(0, W)
    rows, cols = torch.arange(H).view(1, H, 1), torch.arange(W).view(1, 1, W)
    inside_rows = (rows >= y0.view(B, 1, 1)) & (rows < y1.view(B, 1, 1))
    box = inside_rows & (cols >= x0.view(B, 1, 1)) & (cols < x1.view(B, 1, 1))
    out = torch.where(box.unsqueeze(1), partner_x, x)
    kept = 1 - box.flatten(1).double().mean(1)
    return out, kept.float()
