"""Model registry. Every registered factory has the signature

    factory(num_classes: int, in_channels: int = 3, image_size: int = 32, **kwargs) -> nn.Module

and the module's ``forward(x)`` returns :class:`kdlab.core.Outputs` (logits + named features).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

from kdlab.errors import ConfigError
from kdlab.registry import Registry, import_submodules

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
register_model = MODELS.register


def create_model(name: str, num_classes: int, in_channels: int = 3, image_size: int = 32, **kwargs: Any) -> nn.Module:
    factory = MODELS.get(name)
    params = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        bad = [k for k in kwargs if k not in params]
        if bad:
            valid = [p for p in params if p not in ("num_classes", "in_channels", "image_size")]
            raise ConfigError(f"model {name!r} has no option {bad[0]!r} (options: {', '.join(valid) or 'none'})")
    model = factory(num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)
    # how to rebuild it: recorded in every checkpoint's metadata
    setattr(model, "kdlab_spec", {"name": name, "num_classes": num_classes, "in_channels": in_channels,
                                  "image_size": image_size, **kwargs})
    return model


def list_models() -> list[str]:
    return MODELS.names()


def takes_tokens(name: str) -> bool:
    """Whether the registered model takes token ids (a causal LM: ``[B, L, V]`` logits) rather
    than images or vectors."""
    return input_kind(name) == "tokens"


def input_kind(name: str) -> str:
    """What the registered model takes: ``dense`` (images or vectors), ``tokens`` (a causal LM) or
    ``text`` (a text classifier: ``{"input_ids", "attention_mask"}`` → ``[B, C]`` logits)."""
    return str(getattr(MODELS.get(name), "kdlab_inputs", "dense"))


# every module in this package registers itself on import (kdlab.registry.NOT_REGISTRANTS names the helpers)
import_submodules(__name__, __path__)
