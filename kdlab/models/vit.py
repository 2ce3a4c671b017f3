"""Vision Transformer (Dosovitskiy et al., ICLR 2021), small enough for 8–32 pixel images.

Patches of ``patch × patch`` pixels (a strided conv) plus a class token and learned position
embeddings, then pre-norm transformer blocks (``nn.TransformerEncoderLayer``, GELU), a final
LayerNorm and a linear head on the class token. Image sizes that ``patch`` does not divide are
padded on the right and bottom.

Features: ``layer{i}`` the tokens ``[B, 1 + P, dim]`` after block i (class token first, then
the P patches in row-major order), ``pooled`` the normalised class token ``[B, dim]``. Feature
methods that need maps ``[B, C, H, W]`` refuse a ViT side; FitNet connects tokens to tokens or
to a CNN's maps (see ``kdlab.methods._connectors``).

Registered: ``vit_tiny`` (dim 64, depth 4, 4 heads, patch 4; 0.14M parameters for 10 classes of 1×28×28), ``vit_small``
(dim 128, depth 6, 4 heads, patch 4; 0.81M), and ``vit`` with every knob (``dim``, ``depth``, ``heads``,
``patch``, ``mlp_ratio``) as an option, for the student search.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.core import Outputs
from kdlab.models import register_model


class ViT(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 32, patch: int = 4, dim: int = 64,
                 depth: int = 4, heads: int = 4, mlp_ratio: float = 2.0, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.patch = patch
        side = math.ceil(image_size / patch)
        self.embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 1 + side * side, dim) * 0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, int(dim * mlp_ratio), dropout, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Outputs:
        """x ``[B, C, H, W]`` → logits ``[B, num_classes]``; ``layer{i}`` ``[B, 1 + P, dim]``."""
        pad_h, pad_w = (-x.shape[-2]) % self.patch, (-x.shape[-1]) % self.patch
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        h = self.embed(x).flatten(2).transpose(1, 2)  # [B, P, dim]
        h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], dim=1) + self.pos
        feats: dict[str, Tensor] = {}
        for i, block in enumerate(self.blocks, 1):
            h = block(h)
            feats[f"layer{i}"] = h
        pooled = self.norm(h[:, 0])
        feats["pooled"] = pooled
        return Outputs(self.fc(pooled), feats)


@register_model("vit_tiny")
def vit_tiny(num_classes: int, in_channels: int = 3, image_size: int = 32, patch: int = 4) -> nn.Module:
    return ViT(num_classes, in_channels, image_size, patch=patch, dim=64, depth=4, heads=4)


@register_model("vit_small")
def vit_small(num_classes: int, in_channels: int = 3, image_size: int = 32, patch: int = 4) -> nn.Module:
    return ViT(num_classes, in_channels, image_size, patch=patch, dim=128, depth=6, heads=4)


@register_model("vit")
def vit(num_classes: int, in_channels: int = 3, image_size: int = 32, patch: int = 4, dim: int = 64, depth: int = 4,
        heads: int = 4, mlp_ratio: float = 2.0) -> nn.Module:
    """The ViT family with its knobs open (width ``dim``, ``depth``, ``heads``, ``patch``,
    ``mlp_ratio``); the defaults are vit_tiny. Used by the student search (``kdlab search``)."""
    return ViT(num_classes, in_channels, image_size, patch=patch, dim=dim, depth=depth, heads=heads,
               mlp_ratio=mlp_ratio)
