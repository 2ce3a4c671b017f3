"""Less labelling: a labeled fraction of the training set plus an unlabeled pool.

The teacher (trained on the labeled part, unless one is given) labels the pool with soft labels:
the student trains on labeled batches with ``(1 − alpha)·CE + alpha·KD`` and on unlabeled batches,
which carry ``Batch.targets = None``, with KD alone (the ``ce`` method skips them).

Only the labeled fraction's labels are used anywhere: the validation split used to pick the best
epoch is the same fraction of the validation data (at least one sample per class). Models trained
on the labeled part alone (the teacher and the baseline) get as many optimisation steps as the
student, i.e. proportionally more epochs.

Run directory: the student at the top level; a teacher trained here in ``teacher/``, the
labeled-only baseline (when asked) in ``baseline/``.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Iterator, cast

import torch
from pydantic import Field

from kdlab.core import Batch
from kdlab.data import DataSplits, Loader, Split
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
    stratified_indices,
    teacher_acc,
)
from kdlab.spec import Spec


class UnlabeledOptions(Spec):
    """``scheme:`` options of ``kdlab unlabeled``."""

    teacher: str = "cnn_small"  # a model name (trained here on the labeled part, stage teacher/) or a checkpoint
    student: str = "cnn_tiny"  # model name
    labeled: float = Field(0.05, gt=0, le=1)  # labeled fraction of the training (and validation) split
    method: str | list[str | dict[str, Any]] = DEFAULT_METHOD  # the distillation method spec (kd, dkd, ...)
    alpha: float | None = 0.9  # weight of the distillation term; CE gets 1 − alpha (null: the method's default)
    T: float | None = 4.0  # temperature of the distillation term (null: the method's default)
    labeled_epochs: int | None = Field(None, ge=1)  # epochs on the labeled part alone (default: step-matched)
    baseline: bool = True  # also train the student on the labeled part alone (stage baseline/)


class MixedLoader:
    """One pass over a labeled and an unlabeled split per epoch, batches of either kind in a seeded
    random order. Unlabeled batches have ``targets=None``; ``index`` holds the rows' ids in the
    original training split for both kinds."""

    def __init__(self, labeled: Split, pool: Split, batch_size: int, seed: int = 0, augment: Any = None) -> None:
        self.labeled = Loader(labeled, batch_size, shuffle=True, seed=seed, augment=augment,
                              drop_last=len(labeled) > batch_size)
        self.pool = Loader(pool, batch_size, shuffle=True, seed=seed + 1, augment=augment,
                           drop_last=len(pool) > batch_size)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.labeled.set_epoch(epoch)
        self.pool.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.labeled) + len(self.pool)

    def __iter__(self) -> Iterator[Batch]:
        kinds = torch.tensor([0] * len(self.labeled) + [1] * len(self.pool))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch + 7)
        its = [iter(self.labeled), iter(self.pool)]
        for k in kinds[torch.randperm(len(kinds), generator=g)].tolist():
            yield next(its[k])


def split_labeled(data: DataSplits, fraction: float, seed: int) -> tuple[DataSplits, Split]:
    """(the labeled DataSplits: that fraction of train and of val, full test; the unlabeled pool)."""
    tr, va = data.train, data.val
    assert tr.y is not None and va.y is not None
    lab = stratified_indices(tr.y, fraction, seed)
    mask = torch.ones(len(tr), dtype=torch.bool)
    mask[lab] = False
    pool_ids = torch.nonzero(mask).flatten()
    vlab = stratified_indices(va.y, fraction, seed + 1)
    labeled = replace(data, train=replace(tr, x=tr.x[lab], y=tr.y[lab], index=lab),
                      val=replace(va, x=va.x[vlab], y=va.y[vlab], index=None))
    pool = replace(tr, x=tr.x[pool_ids], y=None, index=pool_ids)
    return labeled, pool


def labeled_epochs(epochs: int, mixed_steps: int, labeled_steps: int) -> int:
    """Epochs over the labeled part alone that give at least the student's number of steps."""
    return max(epochs, math.ceil(epochs * mixed_steps / labeled_steps))


@register_scheme("unlabeled", UnlabeledOptions)
def unlabeled(ctx: SchemeContext, opts: UnlabeledOptions) -> Result:
    """Distill on a ``labeled`` fraction plus the unlabeled rest of the training set.

    ``Result.extra``: ``labeled`` (count), ``pool`` (count), ``fraction``, ``teacher``,
    ``teacher_acc``, ``labeled_epochs`` and, when asked, ``baseline_acc``.
    """
    d, sched = ctx.data, ctx.schedule
    methods = objective(opts.method, opts.alpha, opts.T)  # a bad objective fails before any training
    lab, pool = split_labeled(d, opts.labeled, ctx.seed)
    loader = MixedLoader(lab.train, pool, sched.batch_size, seed=ctx.seed, augment=d.augment)
    lab_steps = len(Loader(lab.train, sched.batch_size, drop_last=len(lab.train) > sched.batch_size))
    lep = opts.labeled_epochs or labeled_epochs(sched.epochs, len(loader), lab_steps)

    if is_model_name(opts.teacher):
        rt = ctx.train(opts.teacher, "teacher", data=lab, epochs=lep)
        teacher = ctx.teacher(rt.student)
        t_acc: float | None = rt.test["acc"]
    else:
        teacher = ctx.teacher(opts.teacher)
        t_acc = teacher_acc(teacher, d)
    baseline = ctx.train(opts.student, "baseline", data=lab, epochs=lep).test["acc"] if opts.baseline else None

    # the student's data: the labeled validation split picks its best epoch; the full training
    # split (labels hidden) only describes the data (DataInfo) to the methods
    both = replace(lab, train=replace(d.train, y=None))
    trainable = Distiller(ctx.model(opts.student), teacher, create_methods(methods))

    def extra() -> dict[str, Any]:
        return {"labeled": len(lab.train), "pool": len(pool), "fraction": opts.labeled,
                "teacher": model_name(opts.teacher), "teacher_acc": t_acc, "labeled_epochs": lep,
                **({} if baseline is None else {"baseline_acc": baseline})}

    # MixedLoader has the loop's loader interface (set_epoch, len, iter)
    return ctx.run(trainable, data=both, loader=cast(Loader, loader), extra=extra, report_teacher=teacher)
