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
import hashlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch

from kdlab.config import RunConfig
from kdlab.core import Teacher
from kdlab.data import DataSplits, Loader, load_data_spec
from kdlab.engine.distiller import Distiller
from kdlab.engine.loop import FitResult, fit
from kdlab.engine.schedule import Schedule
from kdlab.errors import ConfigError, IncompatibleError, KDLabError, NonFiniteLossError
from kdlab.models.load import model_for_data
from kdlab.objective import parse_objective
from kdlab.schemes._common import create_methods
from kdlab.schemes.offline import check_teacher_data, resolved_method
from kdlab.teachers.cache_build import ensure_cache
from kdlab.teachers.cached import CachedTeacher, cache_loader
from kdlab.teachers.resolve import resolve_teacher

if TYPE_CHECKING:
    import optuna
    from optuna.trial import Trial as OptunaTrial

from kdlab.tune.report import best_run_config, importances, plot_study, write_outputs
from kdlab.tune.space import (
    Choice,
    Dist,
    Range,
    TuneSpace,
    TuneSpec,
    load_tune,
    require_optuna,
    split_config,
    suggest,
    trial_objective,
    validate_section,
)

__all__ = ["Choice", "Dist", "Range", "SealedSplit", "SealedSplitRead", "TeacherSource", "TuneResult", "TuneSpace",
           "TuneSpec", "best_run_config", "importances", "load_tune", "method_needs", "plot_study", "require_optuna",
           "seal_test", "split_config", "suggest", "teacher_source", "train_short", "trial_objective", "tune",
           "validate_section", "write_outputs"]

log = logging.getLogger("kdlab")



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
