"""The typed section naming a registered model: ``{name: cnn_small, options: {width_mult: 0.5}}``."""
from __future__ import annotations

from typing import Any

from kdlab.spec import Spec


class ModelSpec(Spec):
    """A registered model (``kdlab models`` lists them) and the keyword options it is built with."""

    name: str
    options: dict[str, Any] = {}
