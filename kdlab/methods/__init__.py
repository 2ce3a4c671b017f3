"""Method registry: one file per distillation method.

    @register_method("kd")
    class KD(Method): ...

    create_method("kd", T=4.0, weight=0.9)
"""
from __future__ import annotations

import inspect
from typing import Any

from kdlab.core import Method
from kdlab.errors import ConfigError
from kdlab.registry import Registry, import_submodules

METHODS: Registry[type[Method]] = Registry("method")
register_method = METHODS.register


def create_method(name: str, **kwargs: Any) -> Method:
    cls = METHODS.get(name)
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        bad = [k for k in kwargs if k not in params]
        if bad:
            valid = [p for p in params if p != "self"]
            raise ConfigError(f"method {name!r} has no hyperparameter {bad[0]!r} (valid: {', '.join(valid)})")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"method {name!r}: {e}") from None


def hyperparameters(name: str) -> dict[str, Any]:
    """The constructor's defaults (the paper's), for `kdlab methods`."""
    sig = inspect.signature(METHODS.get(name).__init__)
    return {k: p.default for k, p in sig.parameters.items() if k != "self" and p.default is not inspect._empty}


def paper(name: str) -> str:
    """The method's paper: the first paragraph of its docstring, on one line."""
    doc = inspect.getdoc(METHODS.get(name)) or ""
    return " ".join(doc.split("\n\n", 1)[0].split())


def list_methods() -> list[str]:
    return METHODS.names()


# every module in this package registers itself on import
import_submodules(__name__, __path__)
