"""ShuffleNetV2 (Ma et al., 2018), CIFAR variant.

Differences from the ImageNet network: the stem is a stride-1 1x1 conv (24 channels)-BN-ReLU with
no max-pool, so the three stages run at 1/2, 1/4 and 1/8 of the input (32x32: 16, 8, 4); the final
pooling is global. Each stage is one stride-2 down-sampling unit followed by ``num_blocks`` basic
units (channel split in halves, 1x1-BN-ReLU, 3x3 depthwise-BN, 1x1-BN-ReLU on one half, concat,
channel shuffle with 2 groups). A 1x1 conv-BN-ReLU then widens to the last width before pooling.

``net_size`` picks the widths (stage1, stage2, stage3, last) and blocks per stage:

=========  =========================  =========
net_size   widths                     blocks
=========  =========================  =========
0.5        48, 96, 192, 1024          3, 7, 3
1.0        116, 232, 464, 1024        3, 7, 3
1.5        176, 352, 704, 1024        3, 7, 3
2.0        224, 488, 976, 2048        3, 7, 3
=========  =========================  =========

``shufflenetv2`` (net_size 1.0) has 1.36M parameters at 100 classes (the "ShuffleNetV2" of the
CIFAR-100 distillation tables).

Features: ``stem``; ``layer1..3`` (post-activation stage outputs) with ``layer{i}_preact``, the
same stage output with the last unit's branch taken before its final ReLU (every other channel
of a unit's output is already non-negative, so ``layer{i} == relu(layer{i}_preact)``);
``pooled`` ``[B, last]``.

Parameter names follow the common CIFAR layout (``conv1``, ``bn1``, ``layer1..3``, ``conv2``,
``bn2``, ``linear``), so published CIFAR-100 checkpoints of this network load with
``load_state_dict``.

Works for any number of input channels and any image size >= 8 (28x28: 14, 7, 4).
"""
from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from kdlab.core import Outputs
from kdlab.models import register_model

_CONFIGS: dict[float, tuple[tuple[int, int, int, int], tuple[int, int, int]]] = {
    0.5: ((48, 96, 192, 1024), (3, 7, 3)),
    1.0: ((116, 232, 464, 1024), (3, 7, 3)),
    1.5: ((176, 352, 704, 1024), (3, 7, 3)),
    2.0: ((224, 488, 976, 2048), (3, 7, 3)),
}


def channel_shuffle(x: Tensor, groups: int = 2) -> Tensor:
    """``[B, C, H, W]`` → ``[B, C, H, W]`` with channels reordered ``(g, C/g) → (C/g, g)``."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class BasicUnit(nn.Module):
    """Stride-1 unit ``[B, C, H, W]`` → ``[B, C, H, W]``: the first half of the channels passes
    through, the second half goes through 1x1-BN-ReLU, 3x3 depthwise-BN, 1x1-BN-ReLU."""

    def __init__(self, channels: int, split_ratio: float = 0.5) -> None:
        super().__init__()
        self.split = int(channels * split_ratio)
        c = channels - self.split
        self.conv1 = nn.Conv2d(c, c, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, kernel_size=3, stride=1, padding=1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)

    def forward_with_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (output, the same output with the branch before its last ReLU)."""
        x1, x2 = x[:, : self.split], x[:, self.split :]
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        pre = self.bn3(self.conv3(out))
        out = F.relu(pre)
        return channel_shuffle(torch.cat([x1, out], 1)), channel_shuffle(torch.cat([x1, pre], 1))

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = x[:, : self.split], x[:, self.split :]
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return channel_shuffle(torch.cat([x1, out], 1))


class DownUnit(nn.Module):
    """Stride-2 unit ``[B, cin, H, W]`` → ``[B, cout, ceil(H/2), ceil(W/2)]``: two branches on the
    full input (3x3 dw s2-BN, 1x1-BN-ReLU | 1x1-BN-ReLU, 3x3 dw s2-BN, 1x1-BN-ReLU), concat, shuffle."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = cout // 2
        # left branch
        self.conv1 = nn.Conv2d(cin, cin, kernel_size=3, stride=2, padding=1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv2 = nn.Conv2d(cin, mid, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        # right branch
        self.conv3 = nn.Conv2d(cin, mid, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, kernel_size=3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: Tensor) -> Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1))


class ShuffleNetV2(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, net_size: float = 1.0) -> None:
        super().__init__()
        if float(net_size) not in _CONFIGS:
            raise ValueError(f"net_size must be one of {sorted(_CONFIGS)}, got {net_size}")
        widths, num_blocks = _CONFIGS[float(net_size)]
        self.conv1 = nn.Conv2d(in_channels, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        cin = 24
        for i, (w, n) in enumerate(zip(widths[:3], num_blocks), 1):
            self.add_module(f"layer{i}", nn.Sequential(DownUnit(cin, w), *(BasicUnit(w) for _ in range(n))))
            cin = w
        self.num_stages = 3
        self.conv2 = nn.Conv2d(cin, widths[3], kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(widths[3])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(widths[3], num_classes)
        self.out_dim = widths[3]

    def forward(self, x: Tensor) -> Outputs:
        """x ``[B, C, H, W]`` → logits ``[B, K]``.

        features (32x32, net_size 1.0): stem ``[B, 24, 32, 32]``; layer1 ``[B, 116, 16, 16]``,
        layer2 ``[B, 232, 8, 8]``, layer3 ``[B, 464, 4, 4]`` with layer{i}_preact; pooled
        ``[B, 1024]``.
        """
        h = F.relu(self.bn1(self.conv1(x)))
        feats: dict[str, Tensor] = {"stem": h}
        for i in range(1, self.num_stages + 1):
            stage: nn.Sequential = getattr(self, f"layer{i}")
            *body, last = stage
            for unit in body:
                h = unit(h)
            h, pre = cast(BasicUnit, last).forward_with_preact(h)  # a stage ends with a BasicUnit
            feats[f"layer{i}_preact"] = pre
            feats[f"layer{i}"] = h
        pooled = self.pool(F.relu(self.bn2(self.conv2(h)))).flatten(1)
        feats["pooled"] = pooled
        return Outputs(self.linear(pooled), feats)


@register_model("shufflenetv2")
def shufflenetv2(num_classes: int, in_channels: int = 3, image_size: int = 32, net_size: float = 1.0) -> nn.Module:
    """CIFAR ShuffleNetV2; ``net_size`` in {0.5, 1.0, 1.5, 2.0}."""
    return ShuffleNetV2(num_classes, in_channels, net_size)
