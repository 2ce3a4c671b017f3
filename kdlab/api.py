"""The Python face of kdlab: the public verbs. The CLI is a thin layer over the same functions.

    import kdlab
    teacher = kdlab.train("cnn_large", "fashion-mnist", epochs=8).student
    result = kdlab.distill(teacher, "cnn_tiny", "fashion-mnist", method="kd", T=4, alpha=0.9)
    print(result.test["acc"])

The plumbing lives below: data from a config (:func:`kdlab.data.load_data_spec`), models
(:mod:`kdlab.models.load`), any teacher (:func:`kdlab.teachers.resolve.resolve_teacher`), the
objective (:func:`kdlab.objective.parse_objective`), the run lifecycle (:mod:`kdlab.engine.run`).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from kdlab.config import RunConfig, load_config
from kdlab.core import Teacher
from kdlab.data import DataSplits, Split, load_data
from kdlab.engine.run import Result
from kdlab.engine.schedule import Schedule
from kdlab.errors import ConfigError
from kdlab.evaluate.metrics import classification_metrics, predict
from kdlab.models.load import load_model
from kdlab.objective import DEFAULT_METHOD, parse_objective
from kdlab.schemes.offline import run_config
from kdlab.teachers.resolve import check_teacher_meta

__all__ = ["Result", "distill", "evaluate", "load_model", "run", "scheme", "train"]


def run(cfg: RunConfig, *, command: str = "distill", data: DataSplits | None = None,
        student: nn.Module | None = None, teacher: Teacher | nn.Module | str | Path | None = None,
        resume: bool = False, progress: bool = True, save: bool = True) -> Result:
    """Run a config (what ``kdlab train`` / ``kdlab distill`` do): train, evaluate, keep the run."""
    return run_config(cfg, command=command, data=data, student=student, teacher=teacher, resume=resume,
                      progress=progress, save=save)


def _data(data: str | DataSplits, split_seed: int) -> DataSplits:
    return data if isinstance(data, DataSplits) else load_data(data, split_seed=split_seed)


def _name(model: str | nn.Module) -> str:
    return (model if isinstance(model, str)
            else (getattr(model, "kdlab_spec", None) or {}).get("name", type(model).__name__))


def _config(data: DataSplits, student: str, methods: list[dict[str, Any]], epochs: int, seed: int, out: str | None,
            train_options: Mapping[str, Any], cache: str | Mapping[str, Any] | None = None) -> RunConfig:
    keys = set(Schedule.model_fields)
    bad = [k for k in train_options if k not in keys]
    if bad:
        raise ConfigError(f"unknown argument {bad[0]!r} (training options: {', '.join(sorted(keys))})")
    prov = data.provenance
    spec = {k: prov[k] for k in ("name", "root", "val_fraction", "subset", "split_seed", "augment", "mix", "mix_alpha",
                                 "teacher_view", "options")
            if prov.get(k) is not None} or {"name": data.name}
    base: dict[str, Any] = {"data": spec, "student": {"name": student}, "methods": methods,
                            "train": {"epochs": epochs, **train_options}, "seed": seed, "out": out}
    if cache is not None:
        base["cache"] = dict(cache) if isinstance(cache, Mapping) else str(cache)
    return load_config(base=base)


def train(model: str | nn.Module, data: str | DataSplits, *, epochs: int = 10, seed: int = 0, out: str | None = None,
          save: bool = False, progress: bool = False, split_seed: int = 0, **train_options: Any) -> Result:
    """Train a model from labels alone (a teacher, or a student baseline).

    ``seed`` seeds the weights and the batch order; ``split_seed`` the train/val/test split.
    """
    d = _data(data, split_seed)
    cfg = _config(d, _name(model), [{"name": "ce"}], epochs, seed, out, train_options)
    return run_config(cfg, command="train", data=d, student=None if isinstance(model, str) else model,
                      progress=progress, save=save or out is not None)


def distill(teacher: Teacher | nn.Module | str | Path, student: str | nn.Module, data: str | DataSplits, *,
            method: str | Sequence[str | Mapping[str, Any]] = DEFAULT_METHOD, alpha: float | None = None,
            T: float | None = None, epochs: int = 10, seed: int = 0, out: str | None = None, save: bool = False,
            progress: bool = False, cache: str | Mapping[str, Any] | None = None, split_seed: int = 0,
            **train_options: Any) -> Result:
    """Distill ``teacher`` (a module, a checkpoint path, any Teacher) into ``student`` on ``data``.

    method: a name (``"kd"``), ``"at+kd"``, or a list of names / ``{"name": ..., **hyperparameters}``
            (see :mod:`kdlab.objective`). Without ``alpha``/``T`` each method keeps its paper
            defaults (``"kd"``: 0.9·T²·KL + 0.1·CE at T=4).
    alpha:  the weight of every response-family (logit) method; CE gets 1 − alpha.
    T:      the temperature of every response-family method that has one.
    cache:  a teacher-output cache directory: built on first use, reused while it matches the
            teacher and data, rebuilt when stale (see docs/cache.md); or a ``cache:`` section as a
            mapping (``{"dir": ..., "views": 4}``).
    """
    d = _data(data, split_seed)
    methods = parse_objective(method, alpha=alpha, T=T)
    cfg = _config(d, _name(student), methods, epochs, seed, out, train_options, cache)
    return run_config(cfg, command="distill", data=d, student=None if isinstance(student, str) else student,
                      teacher=teacher, progress=progress, save=save or out is not None)


def scheme(name: str, data: str | DataSplits, *, epochs: int = 10, seed: int = 0, out: str | None = None,
           resume: bool = False, progress: bool = False, split_seed: int = 0, train: Mapping[str, Any] | None = None,
           **options: Any) -> Result:
    """Run a scheme (``"mutual"``, ``"assistant"``, ... — ``kdlab schemes``) with its options.

        kdlab.scheme("mutual", "digits", epochs=5, peers=["cnn_tiny", "cnn_small"])

    ``options`` are the scheme's ``scheme:`` section (see ``kdlab init --scheme NAME``); ``train``
    the training options (lr, batch_size, ...).
    """
    from kdlab.schemes import run_scheme

    d = _data(data, split_seed)
    base = _config(d, "cnn_small", [{"name": "ce"}], epochs, seed, out, dict(train or {})).model_dump(mode="json")
    base.pop("student"), base.pop("methods")
    base["scheme"] = {"name": name, **options}
    cfg = load_config(base=base)
    return run_scheme(name, cfg, data=d, resume=resume, progress=progress, save=out is not None)


def _model_and_split(model: nn.Module | str | Path, data: str | DataSplits | None, split: str,
                     data_kwargs: dict[str, Any]) -> tuple[nn.Module, DataSplits, Split]:
    """``model`` (a module or a checkpoint path), the data and the split to measure it on. With a
    checkpoint and no ``data``: the data the checkpoint records; a checkpoint's own normalisation
    replaces the data's, and a checkpoint made for other data is refused."""
    meta: dict[str, Any] = {}
    module: nn.Module
    if isinstance(model, (str, Path)):
        module, meta = load_model(model)
    else:
        module = model
    if data is None:
        from kdlab.data import data_for_checkpoint

        if not meta.get("data_provenance"):
            raise ConfigError(f"{model}: the checkpoint does not record its data; pass the data (--data NAME)")
        d = data_for_checkpoint(meta)
    else:
        d = data if isinstance(data, DataSplits) else load_data(data, **data_kwargs)
    s: Split = getattr(d, split)
    if meta:
        check_teacher_meta(meta, d, str(model), what="checkpoint")
        if "mean" in meta and len(d.input_shape) == 3:  # evaluate with the checkpoint's own normalisation
            s = replace(s, mean=torch.tensor(meta["mean"]), std=torch.tensor(meta["std"]))
    return module, d, s


def evaluate(model: nn.Module | str | Path, data: str | DataSplits | None = None, split: str = "test",
             **data_kwargs: Any) -> dict[str, float]:
    """Metrics of ``model`` (a module or a checkpoint path) on a split of ``data``.

    With a checkpoint and no ``data``, the data the checkpoint records (source, options, split).
    """
    module, d, s = _model_and_split(model, data, split, data_kwargs)
    if s.y is None:
        raise ConfigError(f"the {split} split of {d.name!r} has no labels to evaluate on")
    return classification_metrics(predict(module, s), s.y, d.num_classes)


def attack(model: nn.Module | str | Path, data: str | DataSplits | None = None, split: str = "test", *,
           kind: str = "pgd", eps: float = 0.1, steps: int = 20, step_size: float | None = None, restarts: int = 1,
           samples: int | None = 1000, seed: int = 0, **data_kwargs: Any) -> dict[str, float]:
    """Clean and adversarial top-1 of ``model`` (a module or checkpoint) under an L∞ attack
    (:mod:`kdlab.evaluate.attack`: ``kind`` fgsm | pgd, ε and step size in [0, 1] pixel units) on the
    first ``samples`` of a split (None: all). Data as in :func:`evaluate`."""
    from kdlab.evaluate.attack import ATTACKS, robust_accuracy

    if kind not in ATTACKS:
        raise ConfigError(f"unknown attack {kind!r} (attacks: {', '.join(ATTACKS)})")
    module, d, s = _model_and_split(model, data, split, data_kwargs)
    if s.y is None:
        raise ConfigError(f"the {split} split of {d.name!r} has no labels to attack")
    if len(d.input_shape) != 3 or d.train.x.dtype != torch.uint8 and float(d.train.x.max()) * d.train.scale > 1.0:
        raise ConfigError(f"{d.name!r}: attacks need images with pixels in [0, 1] (ε is in pixel units)")
    n = len(s) if samples is None else min(samples, len(s))
    idx = torch.arange(n)
    return robust_accuracy(module, s.gather(idx), s.y[idx], s.mean, s.std, kind=kind,  # type: ignore[arg-type]
                           eps=eps, steps=steps, step_size=step_size, restarts=restarts, seed=seed)
