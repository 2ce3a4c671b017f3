"""The generator of the generator-based synthesizers (not a synthesizer).

The DCGAN-style generator of DAFL (Chen et al., ICCV 2019) and DFAD (Fang et al., 2019), which
ZSKT's is also close to: ``Linear(z → 2·ngf·(H/4)·(W/4))`` → BN → ×2 upsample → conv 3×3 → BN →
LeakyReLU(0.2) → ×2 upsample → conv 3×3 → BN → LeakyReLU(0.2) → conv 3×3 → tanh → BN without affine
(the last BN puts the images at zero mean and unit variance, the scale of normalised inputs).
Sizes not divisible by 4 are reached by the last upsampling (to exactly ``H × W``). Vector inputs
``[D]`` get a two-layer MLP with the same final normalisation.
"""
from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn


class Generator(nn.Module):
    """``z [B, nz]`` → inputs ``[B, *shape]`` (``shape`` = ``(C, H, W)`` or ``(D,)``)."""

    def __init__(self, shape: tuple[int, ...], nz: int = 256, ngf: int = 64) -> None:
        super().__init__()
        self.shape, self.nz = tuple(shape), nz
        if len(self.shape) == 3:
            c, h, w = self.shape
            self.init = (max(1, math.ceil(h / 4)), max(1, math.ceil(w / 4)))
            self.mid = (min(h, 2 * self.init[0]), min(w, 2 * self.init[1]))
            self.fc = nn.Linear(nz, 2 * ngf * self.init[0] * self.init[1])
            self.bn0 = nn.BatchNorm2d(2 * ngf)
            self.block1 = nn.Sequential(nn.Conv2d(2 * ngf, 2 * ngf, 3, padding=1, bias=False), nn.BatchNorm2d(2 * ngf),
                                        nn.LeakyReLU(0.2))
            self.block2 = nn.Sequential(nn.Conv2d(2 * ngf, ngf, 3, padding=1, bias=False), nn.BatchNorm2d(ngf),
                                        nn.LeakyReLU(0.2), nn.Conv2d(ngf, c, 3, padding=1), nn.Tanh(),
                                        nn.BatchNorm2d(c, affine=False))
            self.ngf = ngf
        elif len(self.shape) == 1:
            self.mlp = nn.Sequential(nn.Linear(nz, 4 * ngf), nn.BatchNorm1d(4 * ngf), nn.LeakyReLU(0.2),
                                     nn.Linear(4 * ngf, self.shape[0]), nn.BatchNorm1d(self.shape[0], affine=False))
        else:
            raise ValueError(f"a generator makes [C, H, W] images or [D] vectors, not inputs of shape {self.shape}")

    def forward(self, z: Tensor) -> Tensor:
        if len(self.shape) == 1:
            return self.mlp(z)
        x = self.bn0(self.fc(z).view(z.shape[0], 2 * self.ngf, *self.init))
        x = self.block1(F.interpolate(x, size=self.mid, mode="nearest"))
        return self.block2(F.interpolate(x, size=self.shape[1:], mode="nearest"))
