"""A small plain CNN family (conv-BN-ReLU stages, max-pool between stages).

cnn_tiny (8-16-32), cnn_small (16-32-64), cnn_medium (32-64-128), cnn_large (64-128-256, two convs
per stage); ``cnn`` takes the knobs (``widths``, ``convs_per_stage``) for the student search. Works for
any input channels and any image size >= 8 (global average pooling).
"""
from __future__ import annotations

from torch import Tensor, nn

from kdlab.core import Outputs
from kdlab.models import register_model


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)]


class CNN(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, widths: tuple[int, ...], convs_per_stage: int = 1,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.stages = nn.ModuleList()
        cin = in_channels
        for i, w in enumerate(widths):
            mods: list[nn.Module] = [nn.MaxPool2d(2)] if i > 0 else []
            for j in range(convs_per_stage):
                mods += _conv_bn(cin, w)
                if j < convs_per_stage - 1:
                    mods.append(nn.ReLU(inplace=True))
                cin = w
            self.stages.append(nn.Sequential(*mods))
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Outputs:
        """x ``[B, C, H, W]`` → logits ``[B, K]``; features layer{i} ``[B, w_i, H/2^(i-1), W/2^(i-1)]``,
        layer{i}_preact (before that stage's last ReLU), pooled ``[B, w_last]``."""
        feats: dict[str, Tensor] = {}
        h = x
        for i, stage in enumerate(self.stages, 1):
            pre = stage(h)
            h = self.relu(pre)
            feats[f"layer{i}_preact"] = pre
            feats[f"layer{i}"] = h
        pooled = self.pool(h).flatten(1)
        feats["pooled"] = pooled
        return Outputs(self.fc(self.drop(pooled)), feats)


_FAMILY = {
    "cnn_tiny": ((8, 16, 32), 1),
    "cnn_small": ((16, 32, 64), 1),
    "cnn_medium": ((32, 64, 128), 1),
    "cnn_large": ((64, 128, 256), 2),
}


def _make(name: str, widths: tuple[int, ...], convs: int) -> None:
    @register_model(name)
    def factory(num_classes: int, in_channels: int = 3, image_size: int = 32, dropout: float = 0.0) -> nn.Module:
        return CNN(num_classes, in_channels, widths, convs, dropout)

    factory.__name__ = name


for _n, (_w, _c) in _FAMILY.items():
    _make(_n, _w, _c)


@register_model("cnn")
def cnn(num_classes: int, in_channels: int = 3, image_size: int = 32, widths: tuple[int, ...] = (16, 32, 64),
        convs_per_stage: int = 1, dropout: float = 0.0) -> nn.Module:
    """The CNN family with its knobs open: ``widths`` (one entry per stage: depth and width) and
    ``convs_per_stage``; the defaults are cnn_small. Used by the student search (``kdlab search``)."""
    if not widths or any(int(w) < 1 for w in widths):
        raise ValueError(f"widths must be a non-empty list of positive channel counts, got {widths}")
    if convs_per_stage < 1:
        raise ValueError(f"convs_per_stage must be >= 1, got {convs_per_stage}")
    return CNN(num_classes, in_channels, tuple(int(w) for w in widths), convs_per_stage, dropout)
