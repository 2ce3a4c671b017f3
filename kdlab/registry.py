"""One small registry per kind (models, methods, datasets), one decorator each.

    @register_model("resnet20")
    def resnet20(num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module: ...

    create_model("resnet20", num_classes=10)

Every registry is filled the same way: its package calls :func:`import_submodules`, which imports
each module of the package so the decorators run. An import error in any of them propagates.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Any, Callable, Generic, Iterable, TypeVar

from kdlab.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

# Modules of a registry package that register nothing. A helper module normally starts with "_";
# these keep their names because other code imports them by name (or, for sources and main, they
# run the discovery themselves). This is the only list of exceptions.
NOT_REGISTRANTS: dict[str, frozenset[str]] = {
    "kdlab.models": frozenset({"contract", "load", "quant", "spec"}),
    "kdlab.data": frozenset({"augment", "sources", "text", "views"}),
    "kdlab.cli": frozenset({"common", "main"}),
    # PENDING: scheme modules not yet on the scheme contract (each is removed from here when converted)
    "kdlab.schemes": frozenset({"offline"}),
}


def import_submodules(package_name: str, package_path: Iterable[str]) -> list[str]:
    """Import every module of a package whose name does not start with ``_``.

    Also skipped: the names in ``NOT_REGISTRANTS[package_name]``. Modules are imported in sorted
    order and nothing is caught: a module that fails to import (a missing dependency included)
    fails the discovery, with a note naming the package. Returns the imported module names.
    """
    skip = NOT_REGISTRANTS.get(package_name, frozenset())
    imported = []
    for info in sorted(pkgutil.iter_modules(list(package_path)), key=lambda m: m.name):
        if info.name.startswith("_") or info.name in skip:
            continue
        try:
            importlib.import_module(f"{package_name}.{info.name}")
        except Exception as e:
            e.add_note(f"(raised while importing the registered modules of {package_name})")
            raise
        imported.append(info.name)
    return imported


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
