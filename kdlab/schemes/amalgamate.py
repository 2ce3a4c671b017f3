"""Knowledge amalgamation across label spaces: teachers trained on disjoint class subsets are
distilled into one student that predicts the union of their classes, without any joint labels.

Each teacher's logits are placed at its classes' positions in the union label space
(:class:`UnionTeacher`); the student is trained by KD alone on the union's training images, with
``Batch.targets`` None. Teachers never saw each other's classes, so how their scores are put side
by side matters: ``concat`` keeps raw logits, which is exactly a mixture of the teachers'
distributions weighted by softmax_k(logsumexp of teacher k's logits), the energy score that tends to
be higher for a teacher's own kind of image; ``logprob`` puts each teacher's log-probabilities side by
side, a mixture with equal weight on every teacher.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from kdlab.api import Result, get_data, train
from kdlab.core import Batch, Outputs, Teacher
from kdlab.data import DataSplits
from kdlab.engine.distiller import Distiller
from kdlab.errors import ConfigError, IncompatibleError
from kdlab.methods import create_method
from kdlab.schemes._common import (as_teacher, check_classes, finish, is_model_name, make_model, model_name, restrict,
                                   schedule, sub_dir, teacher_acc)
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


def _plain(model: str | nn.Module, d: DataSplits, epochs: int, seed: int, progress: bool, out: str | None,
           train_options: dict[str, Any], use_best: bool) -> Result:
    trainable = Distiller(make_model(model, d, seed), None, [create_method("ce")])
    return finish(trainable, d, schedule(epochs, train_options), seed=seed, progress=progress, out=out,
                  use_best=use_best, command="train")


def amalgamate(teachers: Sequence[str | nn.Module | Teacher], classes: Sequence[Sequence[int]], student: str | nn.Module,
               data: str | DataSplits, *, combine: str = "concat", T: float = 4.0, epochs: int = 10,
               teacher_epochs: int | None = None, baseline: bool = False, seed: int = 0, out: str | None = None,
               progress: bool = False, **train_options: Any) -> Result:
    """Amalgamate teachers of disjoint class subsets into one student over all classes.

    teachers: model names (each trained here on its subset alone, labels renumbered 0..k−1) or
    trained modules / Teachers whose output j is class ``classes[i][j]``.
    The student sees the training images of all classes with no labels (KD at temperature T only).
    Labels are used nowhere in its training, not even for picking an epoch: the last epoch's
    weights are kept. ``baseline=True`` also trains the same student on all labels (same schedule,
    last epoch) for comparison.

    ``Result.extra``: ``teachers`` (test accuracy of each on its own classes), ``union_teacher_acc``
    (the combined teachers on the full test set), ``baseline_acc`` when asked.

        r = amalgamate(["cnn_small", "cnn_small"], [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]], "cnn_tiny",
                       "fashion-mnist", baseline=True)
    """
    if len(teachers) != len(classes):
        raise ConfigError(f"{len(teachers)} teachers but {len(classes)} class lists")
    d = get_data(data, seed=seed)
    check_partition(classes, d.num_classes)
    parts: list[tuple[Any, Sequence[int]]] = []
    rows = []
    for i, (t, cls) in enumerate(zip(teachers, classes)):
        sub = restrict(d, cls, remap=True)
        if is_model_name(t):
            tr = train(t, sub, epochs=teacher_epochs or epochs, seed=seed + i, out=sub_dir(out, f"teacher{i}"),
                       progress=progress, **train_options)
            tt: Any = tr.student
            acc = tr.test["acc"]
        else:
            tt = t if isinstance(t, nn.Module) or not isinstance(t, str) else as_teacher(t, sub)
            acc = teacher_acc(tt, sub)
        parts.append((tt, list(cls)))
        rows.append({"model": model_name(t), "classes": list(cls), "test_acc_own_classes": acc})
    union = UnionTeacher(parts, d.num_classes, combine)
    union_acc = teacher_acc(union, d)
    unlabeled = replace(d, train=replace(d.train, y=None))
    trainable = Distiller(make_model(student, d, seed), union, [create_method("kd", weight=1.0, T=T)])
    r = finish(trainable, unlabeled, schedule(epochs, train_options), seed=seed, progress=progress,
               out=sub_dir(out, "student"), use_best=False, command="amalgamate")
    r.extra.update(teachers=rows, union_teacher_acc=union_acc, combine=combine)
    if baseline:
        if not isinstance(student, str):
            raise ConfigError("baseline=True needs the student as a model name (a fresh copy is trained)")
        rb = _plain(student, d, epochs, seed, progress, sub_dir(out, "baseline"), train_options, use_best=False)
        r.extra["baseline_acc"] = rb.test["acc"]
    return r
