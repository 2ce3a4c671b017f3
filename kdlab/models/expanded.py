"""A model grown by new classes (Learning without Forgetting): an old model plus a new linear head
on its ``pooled`` embedding, registered so that a saved LwF student rebuilds from its checkpoint."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from kdlab.core import Outputs
from kdlab.errors import ConfigError
from kdlab.models import create_model, register_model
from kdlab.models.contract import as_outputs


class ExpandedModel(nn.Module):
    """An old model (its logits = ``old_classes``) plus a new linear head on its ``pooled``
    embedding (``new_classes``); ``forward`` returns logits over ``num_classes`` in the union's
    label order (classes in neither list get −1e4)."""

    old_idx: Tensor
    new_idx: Tensor

    def __init__(self, old: nn.Module, old_classes: Sequence[int], new_classes: Sequence[int], num_classes: int,
                 embed_dim: int) -> None:
        super().__init__()
        self.backbone = old
        self.new_head = nn.Linear(embed_dim, len(new_classes))
        self.register_buffer("old_idx", torch.tensor(list(old_classes), dtype=torch.long))
        self.register_buffer("new_idx", torch.tensor(list(new_classes), dtype=torch.long))
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Outputs:
        o = as_outputs(self.backbone(x))
        new = self.new_head(o.features["pooled"])
        z = o.logits.new_full((o.logits.shape[0], self.num_classes), -1e4)
        z[:, self.old_idx] = o.logits
        z[:, self.new_idx] = new.to(z.dtype)
        return Outputs(z, o.features)


def expanded_spec(model: ExpandedModel, backbone_spec: dict[str, Any] | None) -> dict[str, Any] | None:
    """The spec ``create_model("expanded", ...)`` records for ``model`` (None: the backbone has none)."""
    if not backbone_spec:
        return None
    return {"name": "expanded", "num_classes": model.num_classes, "in_channels": backbone_spec.get("in_channels", 3),
            "image_size": backbone_spec.get("image_size", 32), "backbone": dict(backbone_spec),
            "old_classes": model.old_idx.tolist(), "new_classes": model.new_idx.tolist(),
            "embed_dim": model.new_head.in_features}


@register_model("expanded")
def expanded(num_classes: int, in_channels: int = 3, image_size: int = 32, backbone: dict[str, Any] | None = None,
             old_classes: Sequence[int] = (), new_classes: Sequence[int] = (), embed_dim: int = 0) -> nn.Module:
    """An LwF student's architecture: ``backbone`` (a registered model's spec) + a head for ``new_classes``.

    Defaults (for building one from scratch): a ``cnn_tiny`` backbone over the first half of the
    classes, the head over the rest, the embedding size read from the backbone.
    """
    if num_classes < 2:
        raise ConfigError("model 'expanded' needs at least 2 classes (old ones and new ones)")
    old = list(old_classes) or list(range(num_classes // 2))
    new = list(new_classes) or [c for c in range(num_classes) if c not in old]
    spec = dict(backbone or {"name": "cnn_tiny", "num_classes": len(old), "in_channels": in_channels,
                             "image_size": image_size})
    model = create_model(spec.pop("name"), **spec)
    if embed_dim < 1:
        with torch.no_grad():
            was = model.training
            model.eval()
            o = as_outputs(model(torch.zeros(1, in_channels, image_size, image_size)))
            model.train(was)
        if "pooled" not in o.features:
            raise ConfigError(f"model 'expanded': backbone {spec} has no 'pooled' feature for the new head")
        embed_dim = int(o.features["pooled"].shape[-1])
    return ExpandedModel(model, old, new, num_classes, embed_dim)
