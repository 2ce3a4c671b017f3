"""Shared plumbing for the scheme files (not a scheme): schedules, models, class subsets, finishing a run."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from pydantic import ValidationError
from torch import Tensor, nn

from kdlab.api import Result, _as_teacher, build_model, evaluate, model_meta
from kdlab.config import TrainConfig
from kdlab.core import Batch, Method, Teacher
from kdlab.data import DataSplits, Loader, Split
from kdlab.engine.loop import Schedule, fit
from kdlab.errors import ConfigError
from kdlab.evaluate.metrics import classification_metrics, predict
from kdlab.methods import create_method


def schedule(epochs: int, options: dict[str, Any]) -> Schedule:
    """A validated :class:`Schedule` from ``epochs`` and training options (lr, batch_size, …)."""
    bad = [k for k in options if k not in TrainConfig.model_fields]
    if bad:
        raise ConfigError(f"unknown argument {bad[0]!r} (training options: {', '.join(sorted(TrainConfig.model_fields))})")
    try:
        cfg = TrainConfig(epochs=epochs, **options)
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"bad value for {'.'.join(map(str, err['loc']))!r}: {err['msg']}") from None
    return Schedule(**cfg.model_dump())


def make_model(spec: str | nn.Module, data: DataSplits, seed: int) -> nn.Module:
    """A fresh registered model (initialised from ``seed``) or the module given."""
    if isinstance(spec, nn.Module):
        return spec
    torch.manual_seed(seed)
    return build_model(spec, data)


def is_model_name(spec: Any) -> bool:
    """A registered model name (as opposed to a checkpoint path, a module or a Teacher)."""
    from kdlab.models import list_models

    return isinstance(spec, str) and spec in list_models()


def model_name(spec: Any) -> str:
    if isinstance(spec, str):
        return spec
    return (getattr(spec, "kdlab_spec", None) or {}).get("name", type(spec).__name__)


def logit_method(name: str, weight: float, T: float | None) -> Method:
    """``create_method(name, weight=…, T=…)``, passing T only to methods that take one."""
    from kdlab.methods import hyperparameters

    kwargs: dict[str, Any] = {"weight": weight}
    if T is not None and "T" in hyperparameters(name):
        kwargs["T"] = T
    return create_method(name, **kwargs)


def sub_dir(out: str | Path | None, name: str) -> str | None:
    return None if out is None else str(Path(out) / name)


def finish(trainable: nn.Module, data: DataSplits, sched: Schedule, *, seed: int, progress: bool,
           out: str | Path | None = None, use_best: bool = True, loader: Any = None,
           on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
           extra: dict[str, Any] | None = None, command: str = "scheme") -> Result:
    """Train ``trainable`` with :func:`fit`, restore the best-on-validation student weights (or keep
    the last ones with ``use_best=False``), evaluate on test, return a :class:`Result`."""
    student = trainable.student
    meta = {**model_meta(student, data), "command": command, "seed": seed}
    r = fit(trainable, data, sched, seed=seed, run_dir=out, meta=meta, progress=progress, loader=loader,
            on_epoch_end=on_epoch_end)
    student = trainable.student
    if use_best and r.best_state is not None:
        student.load_state_dict(r.best_state)
    test = evaluate(student, data)
    return Result(student.eval(), test, r.history, r.best["val_acc"], r.run_dir, r.seconds, None, dict(extra or {}))


@torch.no_grad()
def teacher_logits(teacher: Teacher | nn.Module, split: Split, batch_size: int = 512) -> Tensor:
    """Logits ``[N, C]`` of a Teacher (or module) over a split, in order, with sample ids attached."""
    if isinstance(teacher, nn.Module):
        return predict(teacher, split, batch_size)
    outs = [teacher(b).logits.float() for b in Loader(split, batch_size)]
    return torch.cat(outs)


def teacher_metrics(teacher: Teacher | nn.Module, data: DataSplits, split: str = "test") -> dict[str, float]:
    s: Split = getattr(data, split)
    return classification_metrics(teacher_logits(teacher, s), s.y, data.num_classes)


def teacher_acc(teacher: Teacher | nn.Module, data: DataSplits, split: str = "test") -> float | None:
    """Test accuracy of a teacher, or None for one that only answers for training-split ids."""
    if getattr(teacher, "train_split_only", False):
        return None
    return teacher_metrics(teacher, data, split)["acc"]


def as_teacher(teacher: Any, data: DataSplits) -> Teacher:
    return _as_teacher(teacher, data)


def check_classes(classes: Sequence[int], num_classes: int, what: str) -> list[int]:
    out = [int(c) for c in classes]
    if not out:
        raise ConfigError(f"{what}: empty class list")
    if len(set(out)) != len(out):
        raise ConfigError(f"{what}: repeated class in {out}")
    bad = [c for c in out if not 0 <= c < num_classes]
    if bad:
        raise ConfigError(f"{what}: class {bad[0]} is outside 0..{num_classes - 1}")
    return out


def _restrict_split(s: Split, classes: list[int], num_classes: int, remap: bool) -> Split:
    assert s.y is not None
    lut = torch.full((num_classes,), -1, dtype=torch.long)
    cls = torch.tensor(classes, dtype=torch.long)
    lut[cls] = torch.arange(len(classes)) if remap else cls
    keep = lut[s.y] >= 0
    return replace(s, x=s.x[keep].contiguous(), y=lut[s.y][keep].contiguous(), index=None)


def restrict(data: DataSplits, classes: Sequence[int], *, remap: bool) -> DataSplits:
    """The samples of ``classes`` only, in every split. ``remap=True``: labels become positions in
    ``classes`` (a model over ``len(classes)`` outputs); otherwise labels keep their original ids.
    Normalisation statistics stay those of the full data."""
    cl = check_classes(classes, data.num_classes, "classes")
    names = [data.classes[c] for c in cl] if remap else data.classes
    n = data.num_classes
    return replace(data, train=_restrict_split(data.train, cl, n, remap), val=_restrict_split(data.val, cl, n, remap),
                   test=_restrict_split(data.test, cl, n, remap), classes=names)


def stratified_indices(y: Tensor, fraction: float, seed: int) -> Tensor:
    """A seeded, class-stratified ``fraction`` of row ids (at least one per class present)."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"labeled fraction must be in (0, 1], got {fraction}")
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in torch.unique(y):
        rows = torch.nonzero(y == c).flatten()
        k = max(1, int(round(fraction * len(rows))))
        picked.append(rows[torch.randperm(len(rows), generator=g)[:k]])
    return torch.sort(torch.cat(picked)).values


def batch_of(split: Split, idx: Tensor) -> Batch:
    return Batch(split.gather(idx), None if split.y is None else split.y[idx], idx, torch.zeros_like(idx))
