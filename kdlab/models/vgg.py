"""VGG with batch norm, CIFAR variant (no hidden fully-connected layers): vgg8, vgg11, vgg13.

Five conv blocks of 3x3 conv(+bias)-BN-ReLU layers. Max-pool (2x2) after blocks 0, 1, 2; after
block 3 only for inputs of 64 pixels or more (``image_size >= 64``), so 32x32 inputs reach block 4
at 4x4. Then global average pooling and one linear layer from 512 channels.

===========  ===============================================
vgg8         [64] [128] [256] [512] [512]
vgg11        [64] [128] [256, 256] [512, 512] [512, 512]
vgg13        [64, 64] [128, 128] [256, 256] [512, 512] [512, 512]
===========  ===============================================

Parameter counts at 100 classes, 3x32x32: vgg8 3.96M, vgg13 9.46M.

Feature naming: block 0 is the ``stem``; blocks 1..4 are ``layer1``..``layer4``, so ``layer{i}``
has the same index as in the CIFAR ResNets (stem, then three or four stages of decreasing
resolution). Each block ends with a BN; ``layer{i}_preact`` is that BN's output and ``layer{i}``
its ReLU.

Parameter names follow the common CIFAR layout (``block0..4``, ``classifier``), so published
CIFAR-100 checkpoints of these networks load with ``load_state_dict``.

Works for any number of input channels and any image size >= 8 (28x28: 28 -> 14 -> 7 -> 3).
"""
from __future__ import annotations

import math

from torch import Tensor, nn
from torch.nn import functional as F

from kdlab.core import Outputs
from kdlab.models import register_model


def _block(widths: list[int], cin: int) -> nn.Sequential:
    """conv-BN-ReLU ... conv-BN (the last ReLU is applied by the caller)."""
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(cin, w, kernel_size=3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        cin = w
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    def __init__(self, cfg: list[list[int]], num_classes: int, in_channels: int = 3, image_size: int = 32) -> None:
        super().__init__()
        if len(cfg) != 5:
            raise ValueError("a VGG config has five blocks")
        cin = in_channels
        for i, widths in enumerate(cfg):
            self.add_module(f"block{i}", _block(widths, cin))
            cin = widths[-1]
        # Pool after blocks 0..2 always, after block 3 only for large inputs.
        self.pool_after = (True, True, True, image_size >= 64)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)
        self.out_dim = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
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

        features (32x32 input): stem ``[B, 64, 32, 32]``; layer1 ``[B, 128, 16, 16]``,
        layer2 ``[B, 256, 8, 8]``, layer3 ``[B, 512, 4, 4]``, layer4 ``[B, 512, 4, 4]`` (post-ReLU)
        and layer{i}_preact (the block's final BN output); pooled ``[B, 512]``.
        """
        feats: dict[str, Tensor] = {}
        h = x
        for i in range(5):
            block: nn.Sequential = getattr(self, f"block{i}")
            if i > 0 and self.pool_after[i - 1]:
                h = F.max_pool2d(h, kernel_size=2, stride=2)
            pre = block(h)
            h = F.relu(pre)
            if i == 0:
                feats["stem"] = h
            else:
                feats[f"layer{i}_preact"] = pre
                feats[f"layer{i}"] = h
        pooled = self.pool(h).flatten(1)
        feats["pooled"] = pooled
        return Outputs(self.classifier(pooled), feats)


_CFG: dict[str, list[list[int]]] = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
}


def _make(name: str, cfg: list[list[int]]) -> None:
    @register_model(name)
    def factory(num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
        return VGG(cfg, num_classes, in_channels, image_size)

    factory.__name__ = name
    factory.__doc__ = f"VGG-BN, CIFAR variant, blocks {cfg}."


for _n, _c in _CFG.items():
    _make(_n, _c)
