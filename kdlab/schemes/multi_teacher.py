"""Multi-teacher distillation: one student learns from several teachers through an
:class:`~kdlab.teachers.ensemble.EnsembleTeacher` (average, fixed weights, per-sample confidence or
entropy weights, a random teacher per iteration, or logits from some teachers and features from
others).

Stages: each teacher given as a model name is trained here from labels (teacher ``i`` with seed
``seed + i``) in ``teacher0/``, ``teacher1/`` … (same layout); the student is the scheme's own run
directory.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from pydantic import Field
from torch import nn

from kdlab.core import Batch, Method, Outputs, Teacher
from kdlab.engine.distiller import Distiller
from kdlab.engine.run import Result
from kdlab.objective import DEFAULT_METHOD
from kdlab.schemes._common import (
    SchemeContext,
    create_methods,
    is_model_name,
    model_name,
    objective,
    register_scheme,
    teacher_acc,
)
from kdlab.spec import Spec
from kdlab.teachers.ensemble import EnsembleTeacher


class MultiTeacherOptions(Spec):
    """``scheme:`` options of ``kdlab multi-teacher``."""

    teachers: list[str] = Field(["cnn_small", "cnn_medium"], min_length=1)  # model names (trained here) or checkpoints
    student: str = "cnn_tiny"  # the student model
    mode: Literal["mean", "weights", "confidence", "entropy", "random"] = "mean"  # how the teachers are weighted
    weights: list[float] | None = None  # fixed weights (mode weights) or draw probabilities (mode random)
    combine: Literal["logits", "probs"] = "logits"  # weighted mean of logits, or the mixture of probabilities
    logits_from: list[int] | None = None  # indices of the teachers giving logits (default: all)
    features_from: list[int] | None = None  # indices of the teachers giving features (default: first logit one)
    teacher_epochs: int | None = Field(None, ge=1)  # epochs of each teacher trained here (default train.epochs)
    method: str | list[str | dict[str, Any]] = DEFAULT_METHOD  # the student's objective, e.g. kd or kd+fitnet
    alpha: float | None = None  # weight of the response-family methods, CE gets 1 - alpha (default: paper's)
    T: float | None = None  # temperature of the response-family methods (default: paper's; kd 4)


class EnsembleDistiller(Distiller):
    """A :class:`Distiller` taught by an :class:`EnsembleTeacher`, whose random-draw generator is
    part of the module's state: a resumed run draws the same teachers as an uninterrupted one."""

    def __init__(self, student: nn.Module, teacher: EnsembleTeacher, methods: list[Method]) -> None:
        super().__init__(student, teacher, methods)
        self.ensemble = [teacher]  # a list hides it from nn.Module registration

    def get_extra_state(self) -> dict[str, Any]:
        return {"generator": self.ensemble[0].generator.get_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.ensemble[0].generator.set_state(state["generator"])


def _no_teacher(batch: Batch) -> Outputs:
    raise AssertionError("a placeholder teacher, used only to check the ensemble's options")


def _ensemble(teachers: list[Teacher | nn.Module], opts: MultiTeacherOptions, seed: int) -> EnsembleTeacher:
    return EnsembleTeacher(teachers, mode=opts.mode, weights=opts.weights, combine=opts.combine,
                           logits_from=opts.logits_from, features_from=opts.features_from, seed=seed)


def _seeded(ctx: SchemeContext, seed: int) -> SchemeContext:
    """``ctx`` whose runs are seeded with ``seed`` (weights and batch order) instead of the run's."""
    return replace(ctx, opts=replace(ctx.opts, seed=seed))


@register_scheme("multi-teacher", MultiTeacherOptions)
def multi_teacher(ctx: SchemeContext, opts: MultiTeacherOptions) -> Result:
    """Distill ``opts.teachers`` through an ensemble into ``opts.student``.

    ``Result.extra``: ``teachers`` (each teacher's model and test accuracy), ``ensemble_acc`` (the
    combined teacher's test accuracy; for ``random`` mode, of one random draw per evaluation batch)
    and ``mode``. Accuracies are None for teachers read from files that answer for training samples
    only.
    """
    methods = objective(opts.method, opts.alpha, opts.T)  # both checked before anything trains
    _ensemble([_no_teacher] * len(opts.teachers), opts, ctx.seed)
    built: list[Teacher | nn.Module] = []
    rows = []
    for i, t in enumerate(opts.teachers):
        if is_model_name(t):
            tr = _seeded(ctx, ctx.seed + i).train(t, f"teacher{i}", epochs=opts.teacher_epochs, seed=ctx.seed + i)
            built.append(tr.student)
            rows.append({"model": t, "test_acc": tr.test["acc"]})
        else:
            tt = ctx.teacher(t)
            built.append(tt)
            rows.append({"model": model_name(getattr(tt, "module", t)), "test_acc": teacher_acc(tt, ctx.data)})
    ens = _ensemble(built, opts, ctx.seed)
    ens_acc = teacher_acc(ens, ctx.data)
    trainable = EnsembleDistiller(ctx.model(opts.student), ens, create_methods(methods))
    extra = {"teachers": rows, "ensemble_acc": ens_acc, "mode": opts.mode}
    return ctx.run(trainable, None, extra=lambda: extra, report_teacher=None if ens.train_split_only else ens)
