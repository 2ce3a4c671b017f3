"""MobileNetV2 (Sandler et al., 2018), CIFAR variant.

Differences from the ImageNet network: the second inverted-residual group (24 channels) keeps
stride 1, so the total downsampling is 16x instead of 32x (32x32 → 2x2 before pooling), and the
final pooling is global. Channel counts are ``int(c * width_mult)``; the last 1x1 conv has 1280
channels (``int(1280 * width_mult)`` only when ``width_mult > 1``).

Registered:

* ``mobilenetv2``: ``width_mult`` (default 1.0) and ``expand_ratio`` (default 6) arguments;
  2.35M parameters at 100 classes.
* ``mobilenetv2_x0_5``: width 0.5, expansion 6. This is the network reported as "MobileNetV2" in
  the CIFAR-100 distillation tables (CRD and later), 0.81M parameters at 100 classes.

Stages (``layer1``..``layer4``) group the seven inverted-residual groups as
``[16, 24] [32] [64, 96] [160, 320]`` (32x32 input: 16x16, 8x8, 4x4, 2x2). Inverted-residual
blocks end with a linear bottleneck (BN, no ReLU), so ``layer{i}_preact`` is the same tensor as
``layer{i}``: the output of the stage's last BN (plus its residual, where there is one).
``stem`` is the stride-2 conv-BN-ReLU; ``pooled`` is the global average of the final 1x1
conv-BN-ReLU (1280 channels).

Parameter names follow the common CIFAR layout (``conv1``, ``blocks.0..6``, ``conv2``,
``classifier``), so published CIFAR-100 checkpoints of this network load with ``load_state_dict``.

Works for any number of input channels and any image size >= 8 (28x28: 14, 7, 4, 2).
"""
from __future__ import annotations

import math

from torch import Tensor, nn

from kdlab.core import Outputs
from kdlab.models import register_model

# (expansion or None for "use expand_ratio", channels, repeats, first stride)
_SETTING: tuple[tuple[int | None, int, int, int], ...] = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)
# Which of the seven groups form each reported stage.
_STAGES: tuple[tuple[int, ...], ...] = ((0, 1), (2,), (3, 4), (5, 6))


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class InvertedResidual(nn.Module):
    """1x1 expand-BN-ReLU, 3x3 depthwise (stride)-BN-ReLU, 1x1 project-BN; identity residual when
    stride is 1 and ``cin == cout``. ``[B, cin, H, W]`` → ``[B, cout, H/stride, W/stride]``."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = cin * expand_ratio
        self.use_residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, width_mult: float = 1.0, expand_ratio: int = 6) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        cin = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(in_channels, cin, 3, stride=2)
        self.blocks = nn.ModuleList()
        for t, c, n, stride in _SETTING:
            cout = int(c * width_mult)
            group = []
            for k in range(n):
                group.append(InvertedResidual(cin, cout, stride if k == 0 else 1, expand_ratio if t is None else t))
                cin = cout
            self.blocks.append(nn.Sequential(*group))
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(cin, self.last_channel, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, num_classes))
        self.out_dim = self.last_channel
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Outputs:
        """x ``[B, C, H, W]`` → logits ``[B, K]``.

        features (32x32 input, width w): stem ``[B, 32w, 16, 16]``; layer1 ``[B, 24w, 16, 16]``,
        layer2 ``[B, 32w, 8, 8]``, layer3 ``[B, 96w, 4, 4]``, layer4 ``[B, 320w, 2, 2]``, each with
        an identical ``_preact``; pooled ``[B, 1280]``.
        """
        h = self.conv1(x)
        feats: dict[str, Tensor] = {"stem": h}
        for i, groups in enumerate(_STAGES, 1):
            for g in groups:
                h = self.blocks[g](h)
            feats[f"layer{i}_preact"] = h
            feats[f"layer{i}"] = h
        pooled = self.pool(self.conv2(h)).flatten(1)
        feats["pooled"] = pooled
        return Outputs(self.classifier(pooled), feats)


@register_model("mobilenetv2")
def mobilenetv2(
    num_classes: int, in_channels: int = 3, image_size: int = 32, width_mult: float = 1.0, expand_ratio: int = 6
) -> nn.Module:
    """CIFAR MobileNetV2 with the given width multiplier and expansion ratio."""
    return MobileNetV2(num_classes, in_channels, width_mult, expand_ratio)


@register_model("mobilenetv2_x0_5")
def mobilenetv2_x0_5(num_classes: int, in_channels: int = 3, image_size: int = 32, expand_ratio: int = 6) -> nn.Module:
    """CIFAR MobileNetV2, width 0.5: the "MobileNetV2" of the CIFAR-100 distillation benchmarks."""
    return MobileNetV2(num_classes, in_channels, 0.5, expand_ratio)
