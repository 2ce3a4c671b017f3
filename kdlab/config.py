"""Run configuration: short YAML files validated into typed objects.

Unknown or mistyped keys are errors naming the key and the nearest valid one; ``key.sub=value``
overrides apply on top of the file; the resolved config is saved beside every run.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kdlab.data import DataSpec
from kdlab.engine.adversarial import AdversarialSpec
from kdlab.engine.schedule import Schedule
from kdlab.engine.tracking import TrackingSpec
from kdlab.errors import ConfigError
from kdlab.models.spec import ModelSpec
from kdlab.spec import Spec
from kdlab.teachers.cache_build import CacheSpec
from kdlab.teachers.resolve import TeacherSpec

_Strict = Spec
# the sections are defined by the layers that consume them; these names are the config's view
DataConfig = DataSpec
TrainConfig = Schedule
TrackingConfig = TrackingSpec
CacheConfig = CacheSpec
ModelConfig = ModelSpec
TeacherConfig = TeacherSpec


class MethodConfig(BaseModel):
    """``{name: kd, T: 4, weight: 0.9}``: the name plus the method's own hyperparameters (checked
    against its constructor when the method is built)."""

    model_config = ConfigDict(extra="allow")
    name: str


class RunConfig(_Strict):
    data: DataConfig = DataConfig()
    student: ModelConfig = ModelConfig(name="cnn_small")
    teacher: TeacherConfig | None = None
    methods: list[MethodConfig] = [MethodConfig(name="ce")]
    train: TrainConfig = TrainConfig()
    seed: int = Field(0, ge=0, lt=2**32)
    out: str | None = None  # run directory; default runs/<command>-<data>-<student>-<seed>
    threads: int | None = Field(None, ge=1)
    tracking: TrackingConfig = TrackingConfig()
    report: bool = True  # write <run>/report.html (plots) at the end of the run
    # teacher-output cache (kdlab cache build): `cache: DIR` or `cache: {dir: DIR, views: 4, ...}`
    cache: CacheSpec | None = None
    # adversarial training / robust distillation (`--adversarial pgd`): PGD examples crafted against
    # the student in every step; see kdlab/engine/adversarial.py
    adversarial: AdversarialSpec | None = None
    # a scheme's own options (kdlab mutual, kdlab assistant, ...): {name: <scheme>, ...}, validated by
    # that scheme; see `kdlab init --scheme NAME`
    scheme: dict[str, Any] | None = None

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_dir(cls, v: Any) -> Any:
        return {"dir": v} if isinstance(v, (str, Path)) else v

    @field_validator("methods")
    @classmethod
    def _nonempty(cls, v: list[MethodConfig]) -> list[MethodConfig]:
        if not v:
            raise ValueError("at least one method (e.g. ce) is required")
        return v


def _fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Valid keys at ``loc`` in the schema, for 'did you mean' hints."""
    cur: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        f = getattr(cur, "model_fields", {}).get(part)
        if f is None:
            return []
        ann = f.annotation
        args = getattr(ann, "__args__", ())
        cur = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if cur is None:
            return []
    return list(getattr(cur, "model_fields", {}))


def _explain(err: ValidationError, source: str) -> ConfigError:
    e = err.errors()[0]
    loc = tuple(e["loc"])
    key = ".".join(str(p) for p in loc)
    if e["type"] == "extra_forbidden":
        near = difflib.get_close_matches(str(loc[-1]), _fields(RunConfig, loc), n=1)
        hint = f"; did you mean {'.'.join([*map(str, loc[:-1]), near[0]])!r}?" if near else ""
        return ConfigError(f"{source}: unknown config key {key!r}{hint}")
    return ConfigError(f"{source}: bad value for {key!r}: {e['msg']} (got {e.get('input')!r})")


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, value = item.split("=", 1)
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        parsed = yaml.safe_load(value) if value != "" else None
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError):  # e.g. an impossible date: a string
        parsed = value
    return key.split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        cur: Any = raw
        for i, part in enumerate(path[:-1]):
            if isinstance(cur, list):
                try:
                    cur = cur[int(part)]
                except (ValueError, IndexError):
                    raise ConfigError(f"override {item!r}: no list item {part!r}") from None
                continue
            nxt = cur.get(part)
            if not isinstance(nxt, (dict, list)):
                nxt = {}
                cur[part] = nxt
            cur = nxt
        if isinstance(cur, list):
            try:
                cur[int(path[-1])] = value
            except (ValueError, IndexError):
                raise ConfigError(f"override {item!r}: no list item {path[-1]!r}") from None
        else:
            cur[path[-1]] = value
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> RunConfig:
    """YAML file (optional) + ``base`` defaults + dotted overrides → validated RunConfig."""
    raw: dict[str, Any] = dict(base or {})
    source = "config"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"config file {p} not found")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except UnicodeDecodeError as e:
            raise ConfigError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        except OSError as e:
            raise ConfigError(f"cannot read config file {p}: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
        except (ValueError, OverflowError, RecursionError) as e:  # values the YAML loader cannot build
            raise ConfigError(f"{p}: not valid YAML ({type(e).__name__}: {str(e)[:200]})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping, got {type(loaded).__name__}")
        raw = _merge(raw, loaded)
    if isinstance(raw.get("cache"), (str, Path)):  # the `cache: DIR` shorthand, so cache.views=… can follow
        raw["cache"] = {"dir": str(raw["cache"])}
    raw = apply_overrides(raw, overrides or [])
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise _explain(e, source) from None


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
