"""Run configuration: short YAML files validated into typed objects.

Unknown or mistyped keys are errors naming the key and the nearest valid one; ``key.sub=value``
overrides apply on top of the file; the resolved config is saved beside every run.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kdlab.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    name: str = "digits"
    root: str | None = None
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    subset: int | None = Field(None, gt=0)
    augment: bool | None = None  # None: the dataset's default
    split_seed: int | None = None  # seed of the train/val split (and subset); None: the run's seed
    options: dict[str, Any] = {}


class ModelConfig(_Strict):
    name: str = "cnn_small"
    options: dict[str, Any] = {}


class TeacherConfig(_Strict):
    """A kdlab checkpoint (``path/best``), or any of the other sources documented in the README."""

    checkpoint: str | None = None
    model: ModelConfig | None = None  # with ``weights``: a registered model + a safetensors file
    weights: str | None = None  # safetensors state dict for ``model`` or ``factory``
    factory: str | None = None  # "package.module:function" returning an nn.Module (called with ``options``)
    options: dict[str, Any] = {}  # keyword arguments for ``factory``
    features: dict[str, str] = {}  # ``factory``: feature name -> submodule path, e.g. {pooled: avgpool}
    torchscript: str | None = None  # a TorchScript file; loading it runs the program inside: only files you trust
    onnx: str | None = None  # an ONNX file run by ONNX Runtime: a black-box teacher (logits only)
    hf: str | None = None  # a local Hugging Face transformers model directory (safetensors weights)
    mean: list[float] | None = None  # the per-channel input normalisation the teacher expects (on [0, 1]
    std: list[float] | None = None  # pixels); the student's inputs are re-normalised to it
    # how a live module teacher runs in a single CPU process: auto tries ONNX Runtime, then BN folding, each
    # checked against the eager teacher (benchmarks/cpu_options.md); eager keeps the PyTorch module
    accelerate: Literal["auto", "eager", "onnx", "fold_bn"] = "auto"


class TrackingConfig(_Strict):
    """Optional experiment tracking (``pip install 'kdlab[track]'``)."""

    tensorboard: bool = False  # event files in <run>/tensorboard
    mlflow: str | None = None  # tracking URI (sqlite:///mlflow.db), or a path to an SQLite file
    experiment: str = "kdlab"  # MLflow experiment name


class MethodConfig(BaseModel):
    """``{name: kd, T: 4, weight: 0.9}``: the name plus the method's own hyperparameters (checked
    against its constructor when the method is built)."""

    model_config = ConfigDict(extra="allow")
    name: str


class TrainConfig(_Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["sgd", "adamw", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    lr_schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: list[int] = []
    gamma: float = Field(0.1, gt=0)
    grad_clip: float | None = Field(None, gt=0)
    eval_batch_size: int = Field(512, ge=1)
    # NHWC weights for image models while training: 1.1-1.9x faster steps on CPU, less precise
    # BatchNorm gradients (benchmarks/cpu_options.md)
    channels_last: bool = False


class RunConfig(_Strict):
    data: DataConfig = DataConfig()
    student: ModelConfig = ModelConfig()
    teacher: TeacherConfig | None = None
    methods: list[MethodConfig] = [MethodConfig(name="ce")]
    train: TrainConfig = TrainConfig()
    seed: int = Field(0, ge=0, lt=2**32)
    out: str | None = None  # run directory; default runs/<command>-<data>-<student>-<seed>
    threads: int | None = Field(None, ge=1)
    tracking: TrackingConfig = TrackingConfig()
    report: bool = True  # write <run>/report.html (plots) at the end of the run
    # teacher-output cache (kdlab cache build): reused when it matches, rebuilt when stale
    cache: str | None = None  # cache directory
    # layout of a new cache; None: whatever an existing cache holds (new: full float32 logits)
    cache_views: int | None = Field(None, ge=1)  # augmented views per sample; required with augmentation
    cache_topk: int | None = Field(None, ge=1)  # store top-k log-probabilities instead of full logits
    cache_dtype: Literal["float32", "float16"] | None = None
    cache_features: list[str] = []  # teacher features to cache too (e.g. pooled), for feature methods

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
