"""Adapting any nn.Module to the Outputs contract."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from kdlab.core import Outputs


class FeaturesOf(nn.Module):
    """Wrap a module that returns plain logits; named submodules' outputs become features.

    ``features_of(torchvision_like_model, {"layer3": "layer3", "pooled": "avgpool"})``
    """

    def __init__(self, model: nn.Module, names: dict[str, str] | Sequence[str] = ()) -> None:
        super().__init__()
        self.model = model
        self.names = dict(names) if isinstance(names, dict) else {n: n for n in names}
        self._store: dict[str, Tensor] = {}
        modules = dict(model.named_modules())
        for feat, path in self.names.items():
            if path not in modules:
                raise KeyError(f"no submodule {path!r} in {type(model).__name__}")
            modules[path].register_forward_hook(self._hook(feat))

    def _hook(self, feat: str):
        def hook(_m: nn.Module, _inp: object, out: Tensor) -> None:
            self._store[feat] = out.flatten(1) if feat == "pooled" else out

        return hook

    def forward(self, x: Tensor) -> Outputs:
        self._store = {}
        out = self.model(x)
        if isinstance(out, Outputs):
            return out
        logits = out if isinstance(out, Tensor) else getattr(out, "logits")
        return Outputs(logits, dict(self._store))


def features_of(model: nn.Module, names: dict[str, str] | Sequence[str] = ()) -> nn.Module:
    return FeaturesOf(model, names)


def as_outputs(out: object) -> Outputs:
    """Accept Outputs, a plain logits tensor, or an object with ``.logits``."""
    if isinstance(out, Outputs):
        return out
    if isinstance(out, torch.Tensor):
        return Outputs(out)
    return Outputs(getattr(out, "logits"))
