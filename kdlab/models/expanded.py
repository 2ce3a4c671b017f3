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
    """An LwF student's architecture: ``backbone`` (a registered model's spec) + a head for ``new_classes``."""
    if not backbone or not old_classes or not new_classes or embed_dim < 1:
        raise ConfigError("model 'expanded' is the architecture of a Learning-without-Forgetting student: it needs "
                          "backbone (a model spec), old_classes, new_classes and embed_dim")
    spec = dict(backbone)
    return ExpandedModel(create_model(spec.pop("name"), **spec), old_classes, new_classes, num_classes, embed_dim)
