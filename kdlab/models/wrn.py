"""Wide Residual Networks (Zagoruyko & Komodakis, 2016), CIFAR variant: wrn_16_1, wrn_16_2,
wrn_40_1, wrn_40_2.

A 3x3 stem conv (16 channels), three stages of ``n = (depth - 4) / 6`` pre-activation blocks
(BN-ReLU-conv3x3-BN-ReLU-[dropout]-conv3x3, plus shortcut) with widths 16k-32k-64k, a final
BN-ReLU, global average pooling and one linear layer.

Parameter counts at 100 classes, 3x32x32: wrn_16_2 0.70M, wrn_40_1 0.57M, wrn_40_2 2.26M.

Feature naming. The blocks are pre-activation, so a stage's raw output is a residual sum that is
not followed by a ReLU of its own: the BN-ReLU that consumes it belongs to the first block of the
next stage (or to the final BN). The features reported are the activations the network actually
computes there:

* ``stem`` = ReLU(BN(conv1(x))), the BN being stage 1's first ``bn1``;
* ``layer{i}_preact`` = BN(stage i output), using stage i+1's first ``bn1`` (the final BN for the
  last stage), i.e. the BN before ReLU used by OFD-style methods;
* ``layer{i}`` = ReLU(``layer{i}_preact``).

Parameter names follow the common CIFAR layout (``conv1``, ``block1..3.layer``, ``convShortcut``,
``bn1``, ``fc``), so published CIFAR-100 checkpoints of these networks load with
``load_state_dict``.

Works for any number of input channels and any image size >= 8 (adaptive average pooling).
"""
from __future__ import annotations

from typing import cast

from torch import Tensor, nn
from torch.nn import functional as F

from kdlab.core import Outputs
from kdlab.models import register_model


class WideBasicBlock(nn.Module):
    """Pre-activation block ``[B, cin, H, W]`` → ``[B, cout, H/stride, W/stride]``.

    When ``cin == cout`` and ``stride == 1`` the shortcut is the identity on the raw input;
    otherwise a 1x1 conv (with ``stride``) applied to the pre-activated input.
    """

    def __init__(self, cin: int, cout: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, kernel_size=3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = cin == cout and stride == 1
        self.convShortcut: nn.Module | None = None  # noqa: N815 (checkpoint-compatible name)
        if not self.equal_in_out:
            self.convShortcut = nn.Conv2d(cin, cout, kernel_size=1, stride=stride, padding=0, bias=False)

    def forward(self, x: Tensor, act: Tensor | None = None) -> Tensor:
        """``act`` may carry ReLU(bn1(x)) when the caller has already computed it."""
        if act is None:
            act = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        return out + (x if self.convShortcut is None else self.convShortcut(act))


class WideStage(nn.Module):
    """A stage: ``layer`` holds its blocks (the first one has the stride)."""

    def __init__(self, n: int, cin: int, cout: int, stride: int, drop_rate: float) -> None:
        super().__init__()
        blocks = [WideBasicBlock(cin, cout, stride, drop_rate)]
        blocks += [WideBasicBlock(cout, cout, 1, drop_rate) for _ in range(n - 1)]
        self.layer = nn.Sequential(*blocks)

    def forward(self, x: Tensor, act: Tensor | None = None) -> Tensor:
        """``act``: ReLU(bn1(x)) of the first block, when already computed."""
        for j, block in enumerate(self.layer):
            x = block(x, act if j == 0 else None)
        return x


def _entry_bn(stage: WideStage) -> nn.BatchNorm2d:
    """The pre-activation BN (``bn1``) of the stage's first block."""
    return cast(WideBasicBlock, stage.layer[0]).bn1


class WideResNet(nn.Module):
    def __init__(
        self, depth: int, widen_factor: int, num_classes: int, in_channels: int = 3, drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4 (10, 16, 22, 28, 40, ...), got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        cin = widths[0]
        for i, w in enumerate(widths[1:], 1):
            self.add_module(f"block{i}", WideStage(n, cin, w, 1 if i == 1 else 2, drop_rate))
            cin = w
        self.num_stages = len(widths) - 1
        self.bn1 = nn.BatchNorm2d(cin)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        self.out_dim = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Outputs:
        """x ``[B, C, H, W]`` → logits ``[B, K]``.

        features: stem ``[B, 16, H, W]``; layer1 ``[B, 16k, H, W]``, layer2 ``[B, 32k, H/2, W/2]``,
        layer3 ``[B, 64k, H/4, W/4]`` and their ``_preact`` (BN output before the ReLU, see the
        module docstring); pooled ``[B, 64k]``.
        """
        h = self.conv1(x)
        stages: list[WideStage] = [getattr(self, f"block{i}") for i in range(1, self.num_stages + 1)]
        act = F.relu(_entry_bn(stages[0])(h))
        feats: dict[str, Tensor] = {"stem": act}
        for i, stage in enumerate(stages):
            h = stage(h, act)
            bn = _entry_bn(stages[i + 1]) if i + 1 < len(stages) else self.bn1
            pre = bn(h)
            act = F.relu(pre)
            feats[f"layer{i + 1}_preact"] = pre
            feats[f"layer{i + 1}"] = act
        pooled = self.pool(act).flatten(1)
        feats["pooled"] = pooled
        return Outputs(self.fc(pooled), feats)


_FAMILY: dict[str, tuple[int, int]] = {
    "wrn_16_1": (16, 1),
    "wrn_16_2": (16, 2),
    "wrn_40_1": (40, 1),
    "wrn_40_2": (40, 2),
}


def _make(name: str, depth: int, k: int) -> None:
    @register_model(name)
    def factory(num_classes: int, in_channels: int = 3, image_size: int = 32, drop_rate: float = 0.0) -> nn.Module:
        return WideResNet(depth, k, num_classes, in_channels, drop_rate)

    factory.__name__ = name
    factory.__doc__ = f"Wide ResNet, depth {depth}, widen factor {k}; drop_rate is the in-block dropout."


for _n, (_d, _k) in _FAMILY.items():
    _make(_n, _d, _k)
