"""Offline distillation (and training alone): a run config → a Distiller → the run lifecycle.

This is what ``kdlab train``, ``kdlab distill``, ``kdlab bench`` and ``kdlab.train/distill`` run:
the student, the teacher (any source, or its cache) and the objective's methods become one
:class:`~kdlab.engine.distiller.Distiller` handed to :func:`kdlab.engine.run.run_trainable`.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdlab.config import RunConfig
from kdlab.core import Batch, Teacher
from kdlab.data import DataSplits, Loader, load_data_spec, teacher_overlap
from kdlab.engine import distributed
from kdlab.engine.distiller import Distiller
from kdlab.engine.run import Result, RunOptions, run_trainable
from kdlab.errors import ConfigError, DataError
from kdlab.methods import hyperparameters
from kdlab.models.load import model_for_data
from kdlab.schemes._common import create_methods
from kdlab.store.checkpoint import load_meta
from kdlab.teachers.resolve import resolve_teacher


def resolved_method(entry: dict[str, Any]) -> dict[str, Any]:
    """A methods-list entry with every constructor default written out (what the run really uses)."""
    defaults = {k: list(v) if isinstance(v, tuple) else v for k, v in hyperparameters(entry["name"]).items()}
    return {"name": entry["name"], **defaults, **{k: v for k, v in entry.items() if k != "name"}}


def default_run_dir(command: str, cfg: RunConfig) -> Path:
    return Path(cfg.out or f"runs/{command}-{cfg.data.name}-{cfg.student.name}-s{cfg.seed}")


def check_teacher_data(where: str, data: DataSplits) -> None:
    """A kdlab checkpoint teacher must not have been trained on this run's test samples (refused),
    and should have been trained on this dataset (a one-line warning otherwise)."""
    try:
        meta = load_meta(where)
    except Exception:  # not a kdlab checkpoint (ONNX, TorchScript, a module): nothing recorded
        return
    prov = meta.get("data_provenance") or {}
    if not prov:
        return
    mine = data.provenance
    if prov.get("source_fingerprint") != mine.get("source_fingerprint"):
        warnings.warn(f"teacher {where} was trained on other data (dataset {prov.get('name')!r}, content "
                      f"{prov.get('source_fingerprint')}) than this run's {mine.get('name')!r} "
                      f"({mine.get('source_fingerprint')})", UserWarning, stacklevel=3)
        return
    seen = teacher_overlap(prov, data)
    if seen:
        raise DataError(f"teacher {where} was trained on {seen} of this run's {len(data.test)} test samples (its "
                        f"data.split_seed={prov.get('split_seed')}, subset={prov.get('subset')}, val_fraction="
                        f"{prov.get('val_fraction')}; this run's {mine.get('split_seed')}, {mine.get('subset')}, "
                        f"{mine.get('val_fraction')}): use the teacher's data settings")


def run_config(cfg: RunConfig, *, command: str = "distill", data: DataSplits | None = None,
               student: nn.Module | None = None, teacher: Teacher | nn.Module | str | Path | None = None,
               resume: bool = False, progress: bool = True, save: bool = True) -> Result:
    """Build everything ``cfg`` names (or take the objects given), train and keep the run."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    env = distributed.init()  # under torchrun: join the process group before anything collective
    data = data or load_data_spec(cfg.data)
    torch.manual_seed(cfg.seed)
    student = student if student is not None else model_for_data(cfg.student.name, data, **cfg.student.options)
    source: Any = teacher if teacher is not None else cfg.teacher
    live: Teacher | None = None if source is None else resolve_teacher(source, data)  # refuses a misfit first
    if isinstance(source, (str, Path)):
        check_teacher_data(str(source), data)
    elif source is not None and getattr(source, "checkpoint", None):
        check_teacher_data(source.checkpoint, data)
    methods = create_methods([m.model_dump() for m in cfg.methods])
    loader: Loader | None = None
    used = live
    if cfg.cache is not None:  # the teacher's outputs come from a cache (built, reused or rebuilt as needed)
        from kdlab.teachers.cache_build import cache_for_run

        used, loader = cache_for_run(cfg.cache, data, live, batch_size=cfg.train.batch_size,
                                     eval_batch_size=cfg.train.eval_batch_size, seed=cfg.seed)
    elif live is not None and not env.enabled:
        # a live teacher on CPU: its forward in ONNX Runtime / BN-folded when that agrees with eager.
        # Single-process only: under torchrun a rank once aborted in C++ with ONNX Runtime beside gloo.
        from kdlab.teachers.accelerate import accelerate_live

        mode = cfg.teacher.accelerate if cfg.teacher is not None else "auto"
        sample = Batch(data.train.gather(torch.arange(min(64, len(data.train)))))
        used = accelerate_live(live, sample, [m.needs for m in methods], mode)
    needs_teacher = [type(m).__name__ for m in methods if m.needs]
    if needs_teacher and used is None:
        raise ConfigError(f"method {needs_teacher[0]} needs a teacher: set teacher.checkpoint (or --teacher)")
    resolved = cfg.model_dump(mode="json")
    resolved["methods"] = [resolved_method(m) for m in resolved["methods"]]  # every hyperparameter, as used
    opts = RunOptions(default_run_dir(command, cfg) if save else None, resolved, command, cfg.seed,
                      resume, progress, cfg.tracking, cfg.report)
    # the report re-runs a live teacher on test; a cache only answers for training samples
    trainable: Any = Distiller(student, used, methods)
    if cfg.adversarial is not None:
        from kdlab.engine.adversarial import Adversarial

        if len(data.input_shape) != 3:
            raise ConfigError(f"adversarial training needs images with pixels in [0, 1]; {data.name!r} holds vectors")
        a = cfg.adversarial
        trainable = Adversarial(trainable, data.train.mean, data.train.std, eps=a.eps, steps=a.steps,
                                step_size=a.step_size, target=a.target, seed=cfg.seed)
    return run_trainable(trainable, data, cfg.train, opts, loader=loader,
                         report_teacher=None if cfg.cache is not None else live)
