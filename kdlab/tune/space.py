"""The ``tune:`` section: the search space (:class:`TuneSpace`), the study settings (:class:`TuneSpec`),
how a trial draws its objective from them, and how a tune config is read."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence, Union

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from kdlab.config import RunConfig, apply_overrides, load_config
from kdlab.errors import ConfigError
from kdlab.methods import hyperparameters
from kdlab.objective import family, parse_objective
from kdlab.spec import Spec

if TYPE_CHECKING:
    import optuna

log = logging.getLogger("kdlab")



# ---------------------------------------------------------------- the search space

class Range(Spec):
    """A numeric range: ``{low: 0.01, high: 0.2, log: true}``; ``integer: true`` for whole numbers,
    ``step`` for a grid."""

    low: float
    high: float
    log: bool = False
    integer: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> "Range":
        if not self.low < self.high:
            raise ValueError(f"low {self.low} must be below high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        if self.log and self.step is not None:
            raise ValueError("a range is either log or stepped, not both")
        return self


class Choice(Spec):
    """A categorical parameter: ``{choices: [1, 2, 4]}``."""

    choices: list[Union[bool, int, float, str]] = Field(min_length=1)


# a hyperparameter's search space: a range, a choice, or a fixed value
Dist = Union[Range, Choice, bool, int, float, str]


def _kd_only() -> dict[str, dict[str, Dist]]:
    return {"kd": {}}


class TuneSpace(Spec):
    """``tune.space``: what a trial samples (None: leave at the config's / the paper's value)."""

    lr: Dist | None = Range(low=0.01, high=0.2, log=True)
    T: Dist | None = Range(low=1.0, high=8.0)
    alpha: Dist | None = Range(low=0.1, high=1.0)
    # objective spec (kd, dkd, at+kd, ce for the student alone) -> its hyperparameters' spaces;
    # in a sum, name a method's hyperparameter as <method>.<name> (e.g. at.weight)
    methods: dict[str, dict[str, Dist]] = Field(default_factory=_kd_only, min_length=1)

    @field_validator("methods")
    @classmethod
    def _known(cls, v: dict[str, dict[str, Dist]]) -> dict[str, dict[str, Dist]]:
        for key, params in v.items():
            items = parse_objective(key)  # an unknown method: ConfigError naming the nearest one
            for hp in params:
                _target(key, items, hp)
        return v


class TuneSpec(Spec):
    """The ``tune:`` section of a tune config."""

    dir: str | None = None  # study directory; default runs/tune-<data>-<student>
    study: str = "kdlab-tune"  # the study's name in the storage
    storage: str | None = None  # an RDB URL; default sqlite:///<dir>/study.db
    trials: int = Field(20, ge=1)  # finished (complete or pruned) trials the study ends with, all processes together
    timeout: float | None = Field(None, gt=0)  # seconds this process tunes at most
    epochs: int = Field(3, ge=1)  # epochs of one trial
    pruner: Literal["median", "halving", "none"] = "median"
    startup_trials: int = Field(5, ge=0)  # random trials before TPE models the space; the median pruner waits as long
    sampler_seed: int | None = None  # None: every process samples differently (several processes share a study)
    heartbeat: int = Field(10, ge=1)  # seconds; a trial silent for 2 heartbeats is failed and its parameters retried
    space: TuneSpace = TuneSpace()


def _target(key: str, items: list[dict[str, Any]], hp: str) -> int:
    """The position in ``items`` (ce first) of the method a space key ``hp`` tunes."""
    rest = [(i, it["name"]) for i, it in enumerate(items)]
    if "." in hp:
        name, sub = hp.split(".", 1)
        hits = [i for i, n in rest if n == name]
        if not hits:
            raise ConfigError(f"tune.space.methods.{key}: {hp!r} names method {name!r}, which {key!r} does not have")
        if sub not in hyperparameters(name):
            raise ConfigError(f"tune.space.methods.{key}: method {name!r} has no hyperparameter {sub!r} "
                              f"(valid: {', '.join(hyperparameters(name))})")
        return hits[0]
    hits = [i for i, n in rest if n != "ce" and hp in hyperparameters(n)]
    if len(hits) != 1:
        names = [n for _, n in rest if n != "ce"]
        valid = sorted({f"{n}.{h}" for n in names for h in hyperparameters(n)})
        why = "several of its methods have" if hits else "none of its methods has"
        raise ConfigError(f"tune.space.methods.{key}: {why} a hyperparameter {hp!r} "
                          f"(valid: {', '.join(valid[:12])}{' …' if len(valid) > 12 else ''})")
    return hits[0]


def suggest(trial: "optuna.trial.Trial", name: str, dist: Dist) -> Any:
    """Sample ``name`` from ``dist`` (a fixed value is returned as is and recorded nowhere)."""
    if isinstance(dist, Range):
        if dist.integer:
            return trial.suggest_int(name, int(dist.low), int(dist.high), log=dist.log,
                                     step=int(dist.step) if dist.step else 1)
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, Choice):
        return trial.suggest_categorical(name, dist.choices)
    return dist


def trial_objective(trial: "optuna.trial.Trial", space: TuneSpace) -> tuple[str, list[dict[str, Any]]]:
    """The trial's objective key and methods list (ce first): the method choice, then α and T when
    it has response-family methods that take them, then its own hyperparameters."""
    keys = list(space.methods)
    key = trial.suggest_categorical("method", keys) if len(keys) > 1 else keys[0]
    items = parse_objective(key)
    response = [it["name"] for it in items[1:] if family(it["name"]) == "response"]
    alpha = T = None
    if space.alpha is not None and any("weight" in hyperparameters(n) for n in response):
        alpha = float(suggest(trial, "alpha", space.alpha))
    if space.T is not None and any("T" in hyperparameters(n) for n in response):
        T = float(suggest(trial, "T", space.T))
    methods = parse_objective(key, alpha=alpha, T=T)
    for hp, dist in space.methods[key].items():
        i = _target(key, methods, hp)
        methods[i][hp.split(".", 1)[1] if "." in hp else hp] = suggest(trial, f"{key}:{hp}", dist)
    return key, methods


# ---------------------------------------------------------------- a tune config

def split_config(path: str | Path | None, overrides: list[str], section: str, base: dict[str, Any] | None = None
                 ) -> tuple[RunConfig, dict[str, Any]]:
    """A YAML file with a run config and one extra top-level ``section`` (``tune``, ``search``):
    (the validated run config, the section's raw mapping). Overrides apply to both."""
    raw: dict[str, Any] = dict(base or {})
    src = "config"
    if path is not None:
        p = Path(path)
        src = str(p)
        if not p.is_file():
            raise ConfigError(f"config file {p} not found")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping, got {type(loaded).__name__}")
        raw.update(loaded)
    if isinstance(raw.get("cache"), str):
        raw["cache"] = {"dir": raw["cache"]}
    raw = apply_overrides(raw, list(overrides))
    sec = raw.pop(section, None) or {}
    if not isinstance(sec, dict):
        raise ConfigError(f"{src}: {section}: must be a mapping")
    return load_config(base=raw), sec


def validate_section(spec: type[Spec], raw: dict[str, Any], section: str) -> Any:
    """``raw`` as ``spec`` (unknown keys are errors naming the key and, when close, a valid one)."""
    try:
        return spec.model_validate(raw)
    except ValidationError as e:
        import difflib

        from kdlab.config import _fields

        err = e.errors()[0]
        loc = tuple(p for p in err["loc"] if not str(p).startswith(("function-", "union")))
        key = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            near = difflib.get_close_matches(str(loc[-1]), _fields(spec, loc), n=1)
            hint = f"; did you mean '{'.'.join([section, *map(str, loc[:-1]), near[0]])}'?" if near else ""
            raise ConfigError(f"unknown key '{section}.{key}'{hint}") from None
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"bad value for '{section}.{key}': {msg} (got {err.get('input')!r})") from None


def load_tune(path: str | Path | None, overrides: Sequence[str] = (), base: dict[str, Any] | None = None
              ) -> tuple[RunConfig, TuneSpec]:
    cfg, raw = split_config(path, list(overrides), "tune", base)
    spec: TuneSpec = validate_section(TuneSpec, raw, "tune")
    return cfg, spec


def require_optuna() -> Any:
    """The optuna module, or a one-line error saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise ConfigError("kdlab tune needs Optuna: pip install 'kdlab[tune]' (optuna==5.1.0)") from None
    return optuna
