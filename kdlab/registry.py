"""One small registry per kind (models, methods, datasets), one decorator each.

    @register_model("resnet20")
    def resnet20(num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module: ...

    create_model("resnet20", num_classes=10)
"""
from __future__ import annotations

import difflib
from typing import Any, Callable, Generic, TypeVar

from kdlab.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


class Registry(Generic[F]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        def deco(fn: F) -> F:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = fn
            return fn

        return deco

    def get(self, name: str) -> F:
        if name not in self._items:
            near = difflib.get_close_matches(name, list(self._items), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"unknown {self.kind} {name!r}{hint} (known: {', '.join(sorted(self._items))})")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
