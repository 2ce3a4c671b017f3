"""Feature helpers for relation / feature methods (not a method)."""
from __future__ import annotations

import re

from torch import Tensor

from kdlab.core import Outputs
from kdlab.errors import IncompatibleError

_STAGE = re.compile(r"^layer(\d+)$")


def stage_keys(features: dict[str, Tensor]) -> list[str]:
    """``layer{i}`` keys (not ``_preact``) in stage order."""
    found = [(int(m.group(1)), k) for k in features if (m := _STAGE.match(k))]
    return [k for _, k in sorted(found)]


def last_stage_key(features: dict[str, Tensor]) -> str | None:
    """The highest-numbered ``layer{i}`` key present, or None."""
    keys = stage_keys(features)
    return keys[-1] if keys else None


def require_feature(method: str, out: Outputs | None, key: str, side: str) -> Tensor:
    """The feature ``key`` of one side, or IncompatibleError naming what that side has."""
    if out is None:
        raise IncompatibleError(f"{method} needs a teacher")
    if key not in out.features:
        raise IncompatibleError(f"{method} needs feature {key!r} but the {side} only has {sorted(out.features)}")
    return out.features[key]


def describe(features: dict[str, Tensor]) -> str:
    return ", ".join(f"{k}{tuple(v.shape)}" for k, v in features.items()) or "no features"
