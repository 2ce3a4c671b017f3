"""CIFAR ResNets (He et al., 2016, section 4.2), the variant used throughout the CIFAR-100
distillation literature (CRD / RepDistiller).

A 3x3 stem conv, then three stages of ``n = (depth - 2) / 6`` basic blocks each; stage 1 keeps the
resolution, stages 2 and 3 halve it. Shortcuts are identity, or a 1x1 conv + BN projection when the
shape changes. Global average pooling, then one linear layer.

* resnet8/14/20/32/44/56/110: stem 16, stages 16-32-64.
* resnet8x4, resnet32x4: stem 32, stages 64-128-256 (four times wider stages).
* resnet: ``depth`` and base ``width`` as options (stem w, stages w-2w-4w), for the student search.

Parameter counts at 100 classes, 3x32x32: resnet8 0.08M, resnet20 0.28M, resnet32 0.47M,
resnet56 0.86M, resnet110 1.74M, resnet8x4 1.23M, resnet32x4 7.43M.

Parameter names follow the common CIFAR layout (``conv1``, ``bn1``, ``layer1..3``,
``downsample``, ``fc``), so published CIFAR-100 checkpoints of these networks load with
``load_state_dict``.

Works for any number of input channels and any image size >= 8 (adaptive average pooling; stride 2
convs use padding 1, so odd sizes round up: 28 -> 14 -> 7).
"""
from __future__ import annotations

from typing import cast

from torch import Tensor, nn
from torch.nn import functional as F

from kdlab.core import Outputs
from kdlab.models import register_model


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU.

    ``[B, cin, H, W]`` → ``[B, cout, H/stride, W/stride]``.
    """

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def preact(self, x: Tensor) -> Tensor:
        """The residual sum before the final ReLU, ``[B, cout, H', W']``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return out + (x if self.downsample is None else self.downsample(x))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.preact(x))


class CifarResNet(nn.Module):
    """widths = (stem, stage1, stage2, stage3); ``depth = 6n + 2``."""

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (8, 14, 20, 32, ...), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = _conv3x3(in_channels, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        cin = widths[0]
        for i, w in enumerate(widths[1:], 1):
            stride = 1 if i == 1 else 2
            blocks = [BasicBlock(cin, w, stride)] + [BasicBlock(w, w) for _ in range(n - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            cin = w
        self.num_stages = len(widths) - 1
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        self.out_dim = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Outputs:
        """x ``[B, C, H, W]`` → logits ``[B, K]``.

        features: stem ``[B, w0, H, W]``; layer1 ``[B, w1, H, W]``, layer2 ``[B, w2, H/2, W/2]``,
        layer3 ``[B, w3, H/4, W/4]`` (post-ReLU) with layer{i}_preact (the last block's residual
        sum before its ReLU); pooled ``[B, w3]``.
        """
        h = F.relu(self.bn1(self.conv1(x)))
        feats: dict[str, Tensor] = {"stem": h}
        for i in range(1, self.num_stages + 1):
            stage: nn.Sequential = getattr(self, f"layer{i}")
            *body, last = stage
            for block in body:
                h = block(h)
            pre = cast(BasicBlock, last).preact(h)  # every stage is built of BasicBlocks
            h = F.relu(pre)
            feats[f"layer{i}_preact"] = pre
            feats[f"layer{i}"] = h
        pooled = self.pool(h).flatten(1)
        feats["pooled"] = pooled
        return Outputs(self.fc(pooled), feats)


_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)

_FAMILY: dict[str, tuple[int, tuple[int, int, int, int]]] = {
    "resnet8": (8, _NARROW),
    "resnet14": (14, _NARROW),
    "resnet20": (20, _NARROW),
    "resnet32": (32, _NARROW),
    "resnet44": (44, _NARROW),
    "resnet56": (56, _NARROW),
    "resnet110": (110, _NARROW),
    "resnet8x4": (8, _WIDE),
    "resnet32x4": (32, _WIDE),
}


def _make(name: str, depth: int, widths: tuple[int, int, int, int]) -> None:
    @register_model(name)
    def factory(num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
        return CifarResNet(depth, widths, num_classes, in_channels)

    factory.__name__ = name
    factory.__doc__ = f"CIFAR ResNet, depth {depth}, widths {widths} (stem, stages)."


for _n, (_d, _w) in _FAMILY.items():
    _make(_n, _d, _w)


@register_model("resnet")
def resnet(num_classes: int, in_channels: int = 3, image_size: int = 32, depth: int = 8, width: int = 16) -> nn.Module:
    """The CIFAR ResNet family with its knobs open: ``depth`` (6n+2) and the base ``width`` (stem and
    stage 1; stages 2 and 3 double it): depth 8, width 16 is resnet8, width 32 ~ half of resnet8x4.
    Used by the student search (``kdlab search``)."""
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    return CifarResNet(depth, (width, width, 2 * width, 4 * width), num_classes, in_channels)
