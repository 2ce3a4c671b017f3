"""Multi-teacher distillation: one student learns from several teachers through an
:class:`~kdlab.teachers.ensemble.EnsembleTeacher` (average, fixed weights, per-sample confidence or
entropy weights, a random teacher per iteration, or logits from some teachers and features from
others)."""
from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from kdlab.api import Result, distill, get_data, train
from kdlab.core import Teacher
from kdlab.data import DataSplits
from kdlab.errors import ConfigError
from kdlab.schemes._common import as_teacher, is_model_name, model_name, sub_dir, teacher_acc
from kdlab.teachers.ensemble import EnsembleTeacher


def multi_teacher(teachers: Sequence[str | nn.Module | Teacher], student: str | nn.Module, data: str | DataSplits, *,
                  mode: str = "mean", weights: Sequence[float] | None = None, combine: str = "logits",
                  logits_from: Sequence[int] | None = None, features_from: Sequence[int] | int | None = None,
                  method: str | Sequence[str | dict[str, Any]] = "kd", alpha: float | None = 0.9, T: float | None = 4.0,
                  epochs: int = 10, teacher_epochs: int | None = None, seed: int = 0, out: str | None = None,
                  progress: bool = False, **train_options: Any) -> Result:
    """Distill several teachers into ``student``.

    teachers: model names (each trained here from labels, teacher i with seed ``seed + i``),
    trained modules, kdlab checkpoint paths or Teachers. ``mode``/``weights``/``combine``/
    ``logits_from``/``features_from`` configure the :class:`EnsembleTeacher`; ``method``, ``alpha``
    and ``T`` are those of :func:`kdlab.distill` (e.g. ``method="kd+fitnet"`` with
    ``logits_from=[0], features_from=[1]``).

    ``Result.extra``: ``teachers`` (each teacher's test accuracy) and ``ensemble_acc`` (the combined
    teacher's test accuracy; for ``random`` mode, of one random draw per evaluation batch). Both are
    None for teachers read from files, which answer for training samples only.

        r = multi_teacher(["cnn_small", "cnn_medium"], "cnn_tiny", "fashion-mnist", mode="confidence")
    """
    if not teachers:
        raise ConfigError("multi_teacher needs at least one teacher")
    d = get_data(data, seed=seed)
    built: list[Teacher | nn.Module] = []
    rows = []
    for i, t in enumerate(teachers):
        if is_model_name(t):
            tr = train(t, d, epochs=teacher_epochs or epochs, seed=seed + i, out=sub_dir(out, f"teacher{i}"),
                       progress=progress, **train_options)
            built.append(tr.student)
            rows.append({"model": t, "test_acc": tr.test["acc"]})
        else:
            tt = as_teacher(t, d)
            built.append(tt)
            rows.append({"model": model_name(getattr(tt, "module", t)), "test_acc": teacher_acc(tt, d)})
    ens = EnsembleTeacher(built, mode=mode, weights=weights, combine=combine, logits_from=logits_from,
                          features_from=features_from, seed=seed)
    ens_acc = teacher_acc(ens, d)
    r = distill(ens, student, d, method=method, alpha=alpha, T=T, epochs=epochs, seed=seed, out=sub_dir(out, "student"),
                progress=progress, **train_options)
    r.extra.update(teachers=rows, ensemble_acc=ens_acc, mode=mode)
    return r
