"""Multi-layer perceptron on flattened inputs."""
from __future__ import annotations

from torch import Tensor, nn

from kdlab.core import Outputs
from kdlab.models import register_model


class MLP(nn.Module):
    def __init__(self, num_classes: int, in_features: int, hidden: tuple[int, ...] = (256, 128),
                 dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_features
        self.blocks = nn.ModuleList()
        for h in hidden:
            self.blocks.append(nn.Sequential(nn.Linear(prev, h), nn.ReLU(inplace=True), nn.Dropout(dropout)))
            prev = h
        del layers
        self.fc = nn.Linear(prev, num_classes)

    def forward(self, x: Tensor) -> Outputs:
        """x: ``[B, ...]`` → logits ``[B, num_classes]``; features ``layer{i}`` ``[B, hidden_i]``."""
        h = x.flatten(1)
        feats: dict[str, Tensor] = {}
        for i, block in enumerate(self.blocks, 1):
            h = block(h)
            feats[f"layer{i}"] = h
        feats["pooled"] = h
        return Outputs(self.fc(h), feats)


@register_model("mlp")
def mlp(num_classes: int, in_channels: int = 3, image_size: int = 32, hidden: tuple[int, ...] = (256, 128),
        dropout: float = 0.0) -> nn.Module:
    return MLP(num_classes, in_channels * image_size * image_size, tuple(hidden), dropout)


@register_model("mlp_tiny")
def mlp_tiny(num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    return MLP(num_classes, in_channels * image_size * image_size, (32,))
