"""Knowledge amalgamation across label spaces: teachers trained on disjoint class subsets are
distilled into one student that predicts the union of their classes, without any joint labels.

Each teacher's logits are placed at its classes' positions in the union label space
(:class:`UnionTeacher`); the student is trained by KD alone on the union's training images, with
``Batch.targets`` None. Teachers never saw each other's classes, so how their scores are put side
by side matters: ``concat`` keeps raw logits, which is exactly a mixture of the teachers'
distributions weighted by softmax_k(logsumexp of teacher k's logits), the energy score that tends to
be higher for a teacher's own kind of image; ``logprob`` puts each teacher's log-probabilities side by
side, a mixture with equal weight on every teacher.

Stages: each teacher given as a model name is trained here on its classes in ``teacher0/``,
``teacher1/`` …; with ``baseline``, the student trained on all labels in ``baseline/`` (same
layout); the amalgamated student is the scheme's own run directory.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal, Sequence

import torch
from pydantic import Field
from torch import Tensor, nn

from kdlab.core import Batch, Outputs, Teacher
from kdlab.engine.distiller import Distiller
from kdlab.engine.run import Result
from kdlab.errors import ConfigError, IncompatibleError
from kdlab.methods import create_method
from kdlab.schemes._common import (
    SchemeContext,
    check_classes,
    is_model_name,
    model_name,
    register_scheme,
    restrict,
    teacher_acc,
)
from kdlab.spec import Spec
from kdlab.teachers.frozen import FrozenTeacher

COMBINE = ("concat", "logprob")


def check_partition(classes: Sequence[Sequence[int]], num_classes: int) -> list[list[int]]:
    """The class lists, checked to be disjoint and to cover ``0..num_classes−1``."""
    seen: list[int] = []
    out = []
    for cls in classes:
        c = check_classes(cls, num_classes, "teacher classes")
        dup = set(c) & set(seen)
        if dup:
            raise ConfigError(f"class {min(dup)} is claimed by two teachers; the subsets must be disjoint")
        seen += c
        out.append(c)
    missing = sorted(set(range(num_classes)) - set(seen))
    if missing:
        raise ConfigError(f"no teacher covers class(es) {missing}")
    return out


class UnionTeacher:
    """Teachers over disjoint class subsets answering as one teacher over ``num_classes`` classes.

    parts: ``[(teacher, classes), …]``: teacher output j is union class ``classes[j]``. The
    subsets must be disjoint and cover ``0..num_classes−1``.
    """

    def __init__(self, parts: Sequence[tuple[Teacher | nn.Module, Sequence[int]]], num_classes: int,
                 combine: str = "concat") -> None:
        if combine not in COMBINE:
            raise ConfigError(f"combine must be one of {', '.join(COMBINE)}, got {combine!r}")
        lists = check_partition([cls for _, cls in parts], num_classes)
        self.parts: list[tuple[Teacher, Tensor]] = [
            (FrozenTeacher(t) if isinstance(t, nn.Module) else t, torch.tensor(c)) for (t, _), c in zip(parts, lists)]
        self.num_classes, self.combine = num_classes, combine

    @property
    def train_split_only(self) -> bool:
        return any(getattr(t, "train_split_only", False) for t, _ in self.parts)

    def __call__(self, batch: Batch) -> Outputs:
        z: Tensor | None = None
        for t, cls in self.parts:
            out = t(batch).logits.float()
            if out.shape[-1] != len(cls):
                raise IncompatibleError(f"a teacher gives {out.shape[-1]} logits for its {len(cls)} classes")
            if self.combine == "logprob":
                out = out.log_softmax(-1)
            if z is None:
                z = out.new_empty(out.shape[0], self.num_classes)
            z[:, cls.to(out.device)] = out
        assert z is not None
        return Outputs(z)


class AmalgamateOptions(Spec):
    """``scheme:`` options of ``kdlab amalgamate``."""

    teachers: list[str] = Field(["cnn_small", "cnn_small"], min_length=1)  # one per class subset: models or checkpoints
    classes: list[list[int]] = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]  # each teacher's classes (disjoint, covering all)
    student: str = "cnn_tiny"  # the student over all classes
    combine: Literal["concat", "logprob"] = "concat"  # teachers' raw logits side by side, or their log-probabilities
    T: float = Field(4.0, gt=0)  # temperature of the student's KD term (its only term: no labels)
    teacher_epochs: int | None = Field(None, ge=1)  # epochs of each teacher trained here (default train.epochs)
    baseline: bool = True  # also train the same student on all labels (stage baseline/), for comparison


def _seeded(ctx: SchemeContext, seed: int) -> SchemeContext:
    """``ctx`` whose runs are seeded with ``seed`` (weights and batch order) instead of the run's."""
    return replace(ctx, opts=replace(ctx.opts, seed=seed))


@register_scheme("amalgamate", AmalgamateOptions)
def amalgamate(ctx: SchemeContext, opts: AmalgamateOptions) -> Result:
    """Amalgamate teachers of disjoint class subsets into one student over all classes.

    ``opts.teachers[i]``: a model name (trained here on its subset alone, labels renumbered
    0..k−1, seed ``seed + i``, stage ``teacher{i}/``) or a checkpoint whose output j is class
    ``opts.classes[i][j]``. The student sees the training images of all classes with no labels (KD
    at temperature T only). Labels are used nowhere in its training, not even for picking an epoch:
    the last epoch's weights are kept. ``baseline`` also trains the same student on all labels (same
    schedule, last epoch, stage ``baseline/``) for comparison.

    ``Result.extra``: ``teachers`` (test accuracy of each on its own classes), ``union_teacher_acc``
    (the combined teachers on the full test set), ``combine``, ``baseline_acc`` when asked.
    """
    d = ctx.data
    if len(opts.teachers) != len(opts.classes):
        raise ConfigError(f"{len(opts.teachers)} teachers but {len(opts.classes)} class lists (scheme.classes)")
    check_partition(opts.classes, d.num_classes)
    parts: list[tuple[Any, Sequence[int]]] = []
    rows = []
    for i, (t, cls) in enumerate(zip(opts.teachers, opts.classes)):
        sub = restrict(d, cls, remap=True)
        tt: Any
        acc: float | None
        if is_model_name(t):
            tr = _seeded(ctx, ctx.seed + i).train(t, f"teacher{i}", data=sub, epochs=opts.teacher_epochs,
                                                  seed=ctx.seed + i)
            tt, acc = tr.student, tr.test["acc"]
        else:
            tt = ctx.teacher(t, sub)
            acc = teacher_acc(tt, sub)
        parts.append((tt, list(cls)))
        rows.append({"model": model_name(t), "classes": list(cls), "test_acc_own_classes": acc})
    union = UnionTeacher(parts, d.num_classes, opts.combine)
    extra: dict[str, Any] = {"teachers": rows, "union_teacher_acc": teacher_acc(union, d), "combine": opts.combine}
    if opts.baseline:
        plain = Distiller(ctx.model(opts.student), None, [create_method("ce")])
        extra["baseline_acc"] = ctx.run(plain, "baseline", use_best=False).test["acc"]
    unlabeled = replace(d, train=replace(d.train, y=None))
    trainable = Distiller(ctx.model(opts.student), union, [create_method("kd", weight=1.0, T=opts.T)])
    return ctx.run(trainable, None, data=unlabeled, use_best=False, extra=lambda: extra,
                   report_teacher=None if union.train_split_only else union)
