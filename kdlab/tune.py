"""Hyperparameter tuning of a distillation (``kdlab tune``): an Optuna study over the temperature,
α, the method choice, each method's weight and hyperparameters, and the learning rate.

A tune config is a run config (``data``, ``student``, ``teacher``, ``train``, ``seed``, optional
``cache``) plus a ``tune:`` section (:class:`TuneSpec`, unknown keys are errors)::

    tune:
      trials: 30            # finished (complete or pruned) trials the study ends with
      epochs: 3             # epochs of one trial; train.epochs is the final run's
      pruner: median        # median | halving | none, fed the validation accuracy of every epoch
      space:
        lr: {low: 0.01, high: 0.2, log: true}
        T: {low: 1, high: 8}                   # every response-family method with a temperature
        alpha: {low: 0.3, high: 1.0}           # every response-family method's weight; CE gets 1 - alpha
        methods:                               # the method choice (a categorical parameter)
          kd: {}
          dkd: {beta: {low: 1, high: 8}}
          at: {weight: {low: 10, high: 3000, log: true}}

How a trial is measured: the student trains ``tune.epochs`` epochs with :func:`kdlab.engine.loop.fit`
and scores its best validation accuracy. The data's test split is sealed before anything runs
(:func:`seal_test`): any read of it raises, so tuning cannot look at it. The teacher's outputs are
built once into a cache (:mod:`kdlab.teachers.cache_build`, one view per trial epoch under
augmentation) and shared by every trial and every process; methods that need teacher feature maps
(``features:*``) cannot be served by a cache and run against the live teacher (the log and the
report say which trials did).

The study lives in an Optuna storage: ``sqlite:///<dir>/study.db`` by default, resumable after a
kill (a killed trial is marked failed after a heartbeat timeout and its parameters are tried
again), or any RDB URL (``tune.storage``) shared by several processes or machines. At the end
:func:`write_outputs` writes ``best.yaml`` (a run config ``kdlab distill`` runs as is) and
``report.md`` (optimisation history, hyperparameter importances, every trial).
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, Sequence, Union

import torch
import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from kdlab.config import RunConfig, apply_overrides, load_config
from kdlab.core import Teacher
from kdlab.data import DataSplits, Loader, load_data_spec
from kdlab.engine.distiller import Distiller
from kdlab.engine.loop import FitResult, fit
from kdlab.engine.schedule import Schedule
from kdlab.errors import ConfigError, IncompatibleError, KDLabError, NonFiniteLossError
from kdlab.methods import hyperparameters
from kdlab.models.load import model_for_data
from kdlab.objective import family, parse_objective
from kdlab.schemes._common import create_methods
from kdlab.schemes.offline import check_teacher_data, resolved_method
from kdlab.spec import Spec
from kdlab.teachers.cache_build import ensure_cache
from kdlab.teachers.cached import CachedTeacher, cache_loader
from kdlab.teachers.resolve import resolve_teacher

if TYPE_CHECKING:
    import optuna
    from optuna.trial import Trial as OptunaTrial

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


# ---------------------------------------------------------------- the sealed test split

class SealedSplitRead(KDLabError):
    """The test split was read while tuning or searching (a bug: it is sealed for that)."""


class SealedSplit:
    """Stands in for ``DataSplits.test`` while tuning: reading anything of it raises."""

    def __init__(self, why: str) -> None:
        object.__setattr__(self, "_why", why)

    def __getattr__(self, name: str) -> Any:
        raise SealedSplitRead(f"the test split is sealed ({object.__getattribute__(self, '_why')}): read of .{name}")

    def __len__(self) -> int:
        raise SealedSplitRead(f"the test split is sealed ({object.__getattribute__(self, '_why')})")


def seal_test(data: DataSplits, why: str = "tuning chooses on the validation split only") -> DataSplits:
    return replace(data, test=SealedSplit(why))  # type: ignore[arg-type]


# ---------------------------------------------------------------- teacher outputs, built once

@dataclass
class TeacherSource:
    """The teacher a trial distils from: the shared cache when its methods can read one, else live."""

    live: Teacher | None
    cache: CachedTeacher | None
    cache_features: tuple[str, ...]
    build_seconds: float = 0.0

    def for_methods(self, needs: set[str]) -> tuple[Teacher | None, str]:
        if not needs:
            return None, "none"
        concrete = needs - {"logits"}
        if self.cache is not None and not any(n.startswith("features:") for n in concrete) \
                and concrete <= set(self.cache_features):
            return self.cache, "cache"
        return self.live, "live"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (several processes of one study build the cache once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            import fcntl

            fcntl.flock(f, fcntl.LOCK_EX)
        except ImportError:  # not POSIX: no lock (one process per study directory)
            pass
        yield


def teacher_source(cfg: RunConfig, data: DataSplits, needs: list[set[str]], cache_dir: Path, views: int,
                   say: Callable[[str], None]) -> TeacherSource:
    """Resolve the teacher and build (or reuse) the shared cache for every trial whose methods only
    need logits or concrete feature names (e.g. ``pooled``)."""
    if not any(needs):
        return TeacherSource(None, None, ())
    if cfg.teacher is None:
        raise ConfigError("the methods to tune need a teacher: set teacher.checkpoint (or --teacher)")
    if cfg.teacher.checkpoint:
        check_teacher_data(cfg.teacher.checkpoint, data)
    sealed = seal_test(data)
    live = resolve_teacher(cfg.teacher, sealed)
    cacheable = [n for n in needs if n and not any(x.startswith("features:") for x in n)]
    live_only = [n for n in needs if n and any(x.startswith("features:") for x in n)]
    if live_only:
        say("methods that need teacher feature maps (features:*) cannot read a cache: their trials run the "
            "live teacher")
    if not cacheable:
        return TeacherSource(live, None, ())
    feats = tuple(sorted({x for n in cacheable for x in n} - {"logits"}))
    spec = cfg.cache
    t0 = time.perf_counter()
    with file_lock(cache_dir.parent / (cache_dir.name + ".lock")):
        ct = ensure_cache(spec.dir if spec else cache_dir, live, sealed,
                          views=(spec.views if spec and spec.views else (views if data.augment is not None else 1)),
                          k=spec.topk if spec else None, dtype=spec.dtype if spec else None,
                          features=tuple(sorted(set(feats) | set(spec.features if spec else ()))),
                          accelerate=cfg.teacher.accelerate, log=say)
    return TeacherSource(live, ct, feats, time.perf_counter() - t0)


def method_needs(methods: list[dict[str, Any]]) -> set[str]:
    return {n for m in create_methods(methods) for n in m.needs}


# ---------------------------------------------------------------- one short distillation

def train_short(cfg: RunConfig, data: DataSplits, source: TeacherSource, methods: list[dict[str, Any]],
                schedule: Schedule, *, student: tuple[str, dict[str, Any]] | None = None,
                on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> tuple[FitResult, str]:
    """Train a fresh student on ``data`` (its test split sealed) for ``schedule``; nothing is written.
    Returns the fit result (best validation accuracy in ``best``) and where the teacher's
    outputs came from (cache | live | none)."""
    sealed = data if isinstance(data.test, SealedSplit) else seal_test(data)
    ms = create_methods(methods)
    teacher, where = source.for_methods({n for m in ms for n in m.needs})
    if where == "live" and teacher is None:
        raise ConfigError("the methods need a teacher: set teacher.checkpoint (or --teacher)")
    loader: Loader | None = None
    if where == "cache":
        assert isinstance(teacher, CachedTeacher)
        loader = cache_loader(sealed, teacher, schedule.batch_size, seed=cfg.seed)
    name, options = student or (cfg.student.name, dict(cfg.student.options))
    torch.manual_seed(cfg.seed)
    model = model_for_data(name, sealed, **options)
    r = fit(Distiller(model, teacher, ms), sealed, schedule, seed=cfg.seed, progress=False, loader=loader,
            on_epoch_end=on_epoch_end)
    return r, where


# ---------------------------------------------------------------- the study

def require_optuna() -> Any:
    """The optuna module, or a one-line error saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise ConfigError("kdlab tune needs Optuna: pip install 'kdlab[tune]' (optuna==5.1.0)") from None
    return optuna


def study_dir(cfg: RunConfig, spec: TuneSpec) -> Path:
    return Path(spec.dir or f"runs/tune-{cfg.data.name}-{cfg.student.name}")


def storage_url(spec: TuneSpec, directory: Path) -> str:
    return spec.storage or f"sqlite:///{(directory / 'study.db').resolve()}"


def _fingerprint(cfg: RunConfig, spec: TuneSpec) -> str:
    """What a study's trials measure: everything but where and how long this process runs."""
    what = {"run": cfg.model_dump(mode="json", exclude={"out", "threads", "report", "tracking"}),
            "tune": spec.model_dump(mode="json", exclude={"dir", "storage", "trials", "timeout", "heartbeat",
                                                          "sampler_seed"})}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def open_study(spec: TuneSpec, url: str, fingerprint: str, *,
               pruner: "optuna.pruners.BasePruner | None" = None) -> "optuna.Study":
    """Create or load the study (refusing one that was started with another config)."""
    optuna = require_optuna()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet_optuna_warnings()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    sampler = optuna.samplers.TPESampler(seed=spec.sampler_seed, n_startup_trials=spec.startup_trials)
    for attempt in range(6):  # processes starting together race to create the tables and the study
        try:
            storage = optuna.storages.RDBStorage(
                url, heartbeat_interval=spec.heartbeat, grace_period=2 * spec.heartbeat,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2),
                engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None)
            study = optuna.create_study(storage=storage, study_name=spec.study, sampler=sampler, pruner=pruner,
                                        load_if_exists=True, direction="maximize")
            break
        except Exception:  # sqlalchemy's IntegrityError / OperationalError from the other process
            if attempt == 5:
                raise
            time.sleep(0.2 + 0.5 * attempt + random.random() * 0.3)
    old = study.user_attrs.get("fingerprint")
    if old is None:
        study.set_user_attr("fingerprint", fingerprint)
    elif old != fingerprint:
        raise ConfigError(f"study {spec.study!r} in {url} was started with another config (fingerprint {old} ≠ "
                          f"{fingerprint}); use the same config, another tune.study or another tune.dir")
    return study


def quiet_optuna_warnings() -> None:
    """Optuna marks the heartbeat and the importance evaluators experimental; the warnings say nothing
    to a user of kdlab."""
    import warnings

    optuna = require_optuna()

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*have less than 2 trials.*")


def finished(study: "optuna.Study") -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def make_pruner(spec: TuneSpec) -> "optuna.pruners.BasePruner":
    optuna = require_optuna()

    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=max(1, spec.startup_trials), n_warmup_steps=0)
    if spec.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


@dataclass
class TuneResult:
    study: "optuna.Study"
    dir: Path
    best_config: Path | None
    report: Path | None
    command: str | None
    trials_run: int  # by this process


def tune(cfg: RunConfig, spec: TuneSpec, *, data: DataSplits | None = None,
         say: Callable[[str], None] = print) -> TuneResult:
    """Run (or resume, or join) the study until it holds ``spec.trials`` finished trials or this
    process's ``spec.timeout`` ends, then write ``best.yaml`` and ``report.md``."""
    optuna = require_optuna()

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    directory = study_dir(cfg, spec)
    directory.mkdir(parents=True, exist_ok=True)
    url = storage_url(spec, directory)
    data = data if data is not None else load_data_spec(cfg.data)
    sealed = seal_test(data)
    needs = [method_needs(parse_objective(k)) for k in spec.space.methods]
    study = open_study(spec, url, _fingerprint(cfg, spec), pruner=make_pruner(spec))
    source = teacher_source(cfg, data, needs, directory / "cache", spec.epochs, say)
    if source.build_seconds > 0.05:
        say(f"teacher outputs ready in {source.build_seconds:.1f}s (shared by every trial)")
    ran = 0

    def objective(trial: "OptunaTrial") -> float:
        nonlocal ran
        key, methods = trial_objective(trial, spec.space)
        lr = float(suggest(trial, "lr", spec.space.lr)) if spec.space.lr is not None else cfg.train.lr
        schedule = cfg.train.model_copy(update={"epochs": spec.epochs, "lr": lr})
        trial.set_user_attr("methods", [resolved_method(m) for m in methods])
        trial.set_user_attr("lr", lr)
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("teacher", source.for_methods(method_needs(methods))[1])

        def report(epoch: int, rec: dict[str, Any]) -> None:
            trial.report(float(rec["val_acc"]), epoch)
            # after the last epoch the trial is finished: it completes with its score rather than being pruned
            if epoch + 1 < spec.epochs and trial.should_prune():
                say(f"trial {trial.number}: {key} pruned after epoch {epoch + 1} (val_acc {100 * rec['val_acc']:.2f}%)")
                raise optuna.TrialPruned(f"val_acc {rec['val_acc']:.4f} after epoch {epoch + 1}")

        t0 = time.perf_counter()
        try:
            r, where = train_short(cfg, sealed, source, methods, schedule, on_epoch_end=report)
        finally:
            trial.set_user_attr("seconds", round(time.perf_counter() - t0, 3))
        ran += 1
        say(f"trial {trial.number}: {key} val_acc {100 * r.best['val_acc']:.2f}% ({where} teacher, "
            f"{time.perf_counter() - t0:.1f}s)")
        return float(r.best["val_acc"])

    left = spec.trials - finished(study)
    if left > 0:
        say(f"study {spec.study!r} in {url}: {finished(study)} of {spec.trials} trials finished")
        # a diverging trial (too high a learning rate) or a method that refuses the pair fails alone
        study.optimize(objective, n_trials=left, timeout=spec.timeout, catch=(NonFiniteLossError, IncompatibleError),
                       callbacks=[optuna.study.MaxTrialsCallback(
                           spec.trials, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))])
    best, rep, cmd = write_outputs(study, cfg, spec, directory, source)
    if cmd:
        say(f"best trial {study.best_trial.number}: val_acc {100 * study.best_value:.2f}%")
        say(f"train it fully: {cmd}")
    return TuneResult(study, directory, best, rep, cmd, ran)


# ---------------------------------------------------------------- outputs

def best_run_config(cfg: RunConfig, trial: "optuna.trial.FrozenTrial", out: str) -> dict[str, Any]:
    """The run config of a trial at the full ``train.epochs``, live teacher, for ``kdlab distill``."""
    raw = cfg.model_dump(mode="json", exclude_none=True)
    raw.pop("cache", None)  # the final run sees fresh augmentations every epoch (the cache held the trials' views)
    raw["methods"] = trial.user_attrs["methods"]
    raw["train"]["lr"] = trial.user_attrs["lr"]
    raw["out"] = out
    load_config(base=json.loads(json.dumps(raw)))  # it must validate as it will be read
    return raw


def write_outputs(study: "optuna.Study", cfg: RunConfig, spec: TuneSpec, directory: Path,
                  source: TeacherSource | None = None) -> tuple[Path | None, Path | None, str | None]:
    """``best.yaml``, ``trials.csv``, ``history.png``, ``importance.png`` and ``report.md``."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    rows = [{"number": t.number, "state": t.state.name, "value": t.value if t.value is not None else
             (max(t.intermediate_values.values()) if t.intermediate_values else None),
             "epochs": len(t.intermediate_values), "teacher": t.user_attrs.get("teacher"),
             "seconds": t.user_attrs.get("seconds"), "params": json.dumps(t.params, sort_keys=True)}
            for t in trials]
    with open(directory / "trials.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["number"])
        w.writeheader()
        w.writerows(rows)
    if not done:
        return None, None, None
    best = study.best_trial
    best_path = directory / "best.yaml"
    best_path.write_text(yaml.safe_dump(best_run_config(cfg, best, str(directory / "final")), sort_keys=False))
    command = f"kdlab distill {best_path}"
    imp = importances(study)
    plots = plot_study(study, directory, imp)
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    teach = {w: sum(t.user_attrs.get("teacher") == w for t in trials) for w in ("cache", "live", "none")}
    lines = [f"# Tuning study `{study.study_name}`", "",
             f"Data `{cfg.data.name}`, student `{cfg.student.name}`, {spec.epochs} epochs per trial, "
             f"pruner {spec.pruner}; {len(done)} complete, {pruned} pruned, "
             f"{sum(t.state == TrialState.FAIL for t in trials)} failed trials. Chosen on the validation split; "
             "the test split was sealed throughout.", "",
             f"Teacher outputs: {teach['cache']} trials read the shared cache, {teach['live']} ran the live teacher"
             + (" (methods that need feature maps cannot read a cache)" if teach["live"] else "")
             + (f"; the cache was ready in {source.build_seconds:.1f}s" if source and source.build_seconds else "")
             + ".", "",
             f"**Best trial {best.number}**: validation accuracy {100 * best.value:.2f}% "  # type: ignore[operator]
             f"with {json.dumps(best.params)}.", "",
             f"Train it fully: `{command}`", "",
             "## Optimisation history", "", f"![history]({plots[0].name})" if plots else "(no plot)", "",
             "## Hyperparameter importances", ""]
    if imp:
        lines += ["fANOVA importance (Optuna's FanovaImportanceEvaluator, seed 0) over the parameters every "
                  "complete trial has:", "",
                  "| parameter | importance |", "|---|---|", *[f"| {k} | {v:.3f} |" for k, v in imp.items()], ""]
        if len(plots) > 1:
            lines += [f"![importances]({plots[1].name})", ""]
    else:
        lines += ["Not computable yet (needs at least two complete trials that vary a parameter).", ""]
    lines += ["## Trials", "", "| # | state | val acc % | epochs | teacher | s | parameters |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        v = "" if r["value"] is None else f"{100 * float(r['value']):.2f}"
        lines.append(f"| {r['number']} | {r['state']} | {v} | {r['epochs']} | {r['teacher']} | {r['seconds']} | "
                     f"`{r['params']}` |")
    report = directory / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return best_path, report, command


def importances(study: "optuna.Study") -> dict[str, float]:
    optuna = require_optuna()

    try:
        ev = optuna.importance.FanovaImportanceEvaluator(seed=0)
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study, evaluator=ev).items()}
    except (RuntimeError, ValueError, ZeroDivisionError):  # too few trials, or nothing varied
        return {}


def plot_study(study: "optuna.Study", directory: Path, imp: dict[str, float]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    out: list[Path] = []
    trials = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = [t.number for t in trials if t.state == TrialState.COMPLETE]
    ys = [100 * float(t.value) for t in trials if t.state == TrialState.COMPLETE]  # type: ignore[arg-type]
    ax.scatter(xs, ys, s=14, label="complete")
    pr = [(t.number, 100 * t.intermediate_values[max(t.intermediate_values)]) for t in trials
          if t.state == TrialState.PRUNED and t.intermediate_values]
    if pr:
        ax.scatter([p[0] for p in pr], [p[1] for p in pr], s=14, marker="x", color="grey", label="pruned (last)")
    best, run_best = float("-inf"), []
    for x, y in zip(xs, ys):
        best = max(best, y)
        run_best.append(best)
    ax.step(xs, run_best, where="post", color="C3", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.append(directory / "history.png")
    fig.savefig(out[-1], dpi=100)
    plt.close(fig)
    if imp:
        fig, ax = plt.subplots(figsize=(6, 0.4 * len(imp) + 1))
        names = list(imp)[::-1]
        ax.barh(names, [imp[n] for n in names])
        ax.set_xlabel("importance (fANOVA)")
        fig.tight_layout()
        out.append(directory / "importance.png")
        fig.savefig(out[-1], dpi=100)
        plt.close(fig)
    return out


__all__ = ["TuneSpec", "TuneSpace", "load_tune", "seal_test", "train_short", "tune"]
