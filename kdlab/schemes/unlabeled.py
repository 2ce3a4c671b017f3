"""Less labelling: a labeled fraction of the training set plus an unlabeled pool.

The teacher (trained on the labeled part, unless one is given) labels the pool with soft labels:
the student trains on labeled batches with ``(1 − alpha)·CE + alpha·KD`` and on unlabeled batches,
which carry ``Batch.targets = None``, with KD alone (the ``ce`` method skips them).

Only the labeled fraction's labels are used anywhere: the validation split used to pick the best
epoch is the same fraction of the validation data (at least one sample per class). Models trained
on the labeled part alone (the teacher and the baseline) get as many optimisation steps as the
student, i.e. proportionally more epochs.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Iterator

import torch
from torch import nn

from kdlab.api import Result, get_data
from kdlab.core import Batch, Teacher
from kdlab.data import DataSplits, Loader, Split
from kdlab.engine.distiller import Distiller
from kdlab.errors import ConfigError
from kdlab.methods import create_method
from kdlab.schemes._common import (as_teacher, finish, is_model_name, logit_method, make_model, schedule,
                                   stratified_indices, sub_dir, teacher_acc)


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


def unlabeled(teacher: str | nn.Module | Teacher, student: str | nn.Module, data: str | DataSplits, *,
              labeled: float = 0.05, method: str = "kd", alpha: float = 0.9, T: float = 4.0, epochs: int = 10,
              labeled_epochs: int | None = None, baseline: bool = False, seed: int = 0, out: str | None = None,
              progress: bool = False, **train_options: Any) -> Result:
    """Distill on a ``labeled`` fraction plus the unlabeled rest of the training set.

    teacher: a model name (trained here on the labeled part), or a trained module / checkpoint /
    Teacher. ``labeled_epochs`` (default: step-matched to the student) is the number of epochs
    for models trained on the labeled part alone. ``baseline=True`` also trains ``student`` on
    the labeled part alone.

    ``Result.extra``: ``labeled`` (count), ``pool`` (count), ``teacher_acc``, ``baseline_acc``.

        r = unlabeled("cnn_small", "cnn_tiny", "fashion-mnist", labeled=0.01, baseline=True)
    """
    d = get_data(data, seed=seed)
    lab, pool = split_labeled(d, labeled, seed)
    sched = schedule(epochs, train_options)
    loader = MixedLoader(lab.train, pool, sched.batch_size, seed=seed, augment=d.augment)
    lab_steps = len(Loader(lab.train, sched.batch_size, drop_last=len(lab.train) > sched.batch_size))
    lep = labeled_epochs or max(epochs, math.ceil(epochs * len(loader) / lab_steps))
    lab_sched = schedule(lep, train_options)

    def plain(model: str | nn.Module, sd: int, name: str) -> Result:
        return finish(Distiller(make_model(model, lab, sd), None, [create_method("ce")]), lab, lab_sched, seed=sd,
                      progress=progress, out=sub_dir(out, name), command="train")

    if is_model_name(teacher):
        rt = plain(teacher, seed, "teacher")  # type: ignore[arg-type]
        t: Any = rt.student
        t_acc = rt.test["acc"]
    else:
        t = as_teacher(teacher, d)
        t_acc = teacher_acc(t, d)
    both = replace(lab, train=replace(d.train, y=None))  # only for DataInfo (num_train) in prepare
    methods = [create_method("ce", weight=1 - alpha), logit_method(method, alpha, T)]
    trainable = Distiller(make_model(student, d, seed), as_teacher(t, d), methods)
    r = finish(trainable, both, sched, seed=seed, progress=progress, out=sub_dir(out, "student"), loader=loader,
               command="unlabeled")
    r.extra.update(labeled=len(lab.train), pool=len(pool), fraction=labeled, teacher_acc=t_acc, labeled_epochs=lep)
    if baseline:
        if not isinstance(student, str):
            raise ConfigError("baseline=True needs the student as a model name (a fresh copy is trained)")
        r.extra["baseline_acc"] = plain(student, seed, "baseline").test["acc"]
    return r
