"""Cross-modal and black-box distillation.

The teacher sees one view of each sample and the student another, paired by sample id: the
student trains on its own view of the data, and :class:`PairedTeacher` looks up the teacher's view of
the same samples by ``Batch.index``. Views are derived from the images:

* ``full`` — the images as they are;
* ``lowres:K`` — K×K average pooling (a K-times smaller image; the student is built for that size);
* ``blur:K`` — the same pooling upsampled back to full size (detail lost, size kept);
* ``edges`` — Sobel gradient magnitude per channel (a different modality of the same scene);
* ``gray`` — the channel mean; ``channel:i`` — channel i alone.

A teacher may also be only a file of per-sample outputs (``.npy``/``.npz``, see
:class:`~kdlab.teachers.from_file.FileTeacher`): the student then learns from those outputs alone.
The paired teacher answers for un-augmented samples.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from kdlab.core import Batch, Outputs, Teacher
from kdlab.data import Loader, Split
from kdlab.data.views import view_data
from kdlab.engine import distributed
from kdlab.engine.distiller import Distiller
from kdlab.engine.run import Result
from kdlab.errors import ConfigError
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
from kdlab.store import checkpoint as ckpt
from kdlab.teachers.from_file import FileTeacher
from kdlab.teachers.frozen import FrozenTeacher


class CrossModalOptions(Spec):
    """``scheme:`` options of ``kdlab cross-modal``."""

    teacher: str = "cnn_small"  # model name (trained here, stage teacher/), checkpoint, or .npy/.npz file of outputs
    student: str = "cnn_tiny"  # model name (built for its view's input size)
    teacher_view: str = "full"  # full | lowres:K | blur:K | edges | gray | channel:i
    student_view: str = "lowres:2"  # the student's view (same choices)
    method: str | list[str | dict[str, Any]] = DEFAULT_METHOD  # the distillation method spec (kd, dkd, ...)
    alpha: float | None = 0.9  # weight of the distillation term, CE gets 1 − alpha; 1 = the teacher's outputs alone
    T: float | None = 4.0  # temperature of the distillation term (null: the method's default)
    teacher_epochs: int | None = Field(None, ge=1)  # epochs of a teacher trained here (default: train.epochs)
    baseline: bool = True  # also train the student on its view from labels alone (stage baseline/)
    save_teacher_outputs: str | None = None  # write the teacher's outputs over the training split to this .npz


class PairedTeacher:
    """A teacher that sees its own view of each sample: ``Batch.index`` selects rows of ``views``
    (a split of the teacher's modality aligned by id with the student's training split)."""

    train_split_only = True  # ids index the training split's views

    def __init__(self, teacher: Teacher | nn.Module, views: Split) -> None:
        self.teacher = FrozenTeacher(teacher) if isinstance(teacher, nn.Module) else teacher
        self.views = views
        self.ids = None if views.index is None else {int(i): r for r, i in enumerate(views.index.tolist())}

    def __call__(self, batch: Batch) -> Outputs:
        if batch.index is None:
            raise ConfigError("a paired-view teacher needs Batch.index (sample ids)")
        idx = batch.index.detach().cpu().long()
        if self.ids is not None:
            idx = torch.tensor([self.ids[int(i)] for i in idx])
        x = self.views.gather(idx).to(batch.index.device)
        return self.teacher(Batch(x, batch.targets, batch.index, batch.view))

    def to(self, device: Any) -> "PairedTeacher":
        if hasattr(self.teacher, "to"):
            self.teacher.to(device)
        return self


def _is_outputs_file(source: str) -> bool:
    return Path(source).suffix in (".npy", ".npz")


@torch.no_grad()
def write_teacher_outputs(teacher: Teacher, split: Split, path: str | Path, batch_size: int = 512) -> Path:
    """Write ``teacher``'s logits over every sample of ``split`` to a ``.npz`` (``logits``,
    ``index``, ``targets`` when labeled; the format :class:`FileTeacher` reads), atomically and
    from the main process only. Returns the path written (``.npz`` appended when missing)."""
    p = Path(path)
    if p.suffix != ".npz":
        p = p.with_suffix(p.suffix + ".npz") if p.suffix else p.with_suffix(".npz")
    if not distributed.is_main():
        return p
    logits, index = [], []
    for b in Loader(split, batch_size):
        logits.append(teacher(b).logits.float().cpu())
        assert b.index is not None
        index.append(b.index.cpu())
    logits_np, index_np = torch.cat(logits).numpy(), torch.cat(index).numpy()
    targets = None if split.y is None else split.y.numpy()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
            if targets is None:
                np.savez(f, logits=logits_np, index=index_np)
            else:
                np.savez(f, logits=logits_np, index=index_np, targets=targets)

    ckpt.atomic_write(p, write)
    return p


@register_scheme("cross-modal", CrossModalOptions)
def cross_modal(ctx: SchemeContext, opts: CrossModalOptions) -> Result:
    """Distill a teacher that sees ``teacher_view`` into a student that sees ``student_view``.

    ``opts.teacher``: a model name (trained here on the teacher's view, stage ``teacher/``), a
    checkpoint trained on that view, or a ``.npy``/``.npz`` file of per-sample outputs over the
    training split (a black-box teacher; ``teacher_view`` is then irrelevant). ``alpha=1`` learns
    from the teacher's outputs alone, without labels. ``baseline`` also trains the student on its
    view from labels alone (stage ``baseline/``). ``save_teacher_outputs`` writes the teacher's
    outputs over the training split to a ``.npz`` usable as a file teacher later.

    ``Result.extra``: ``teacher``, ``teacher_acc`` (teacher on its view's test split; None for a
    file teacher), ``views``, ``teacher_outputs`` (the file written, or None) and, when asked,
    ``baseline_acc``.
    """
    d = ctx.data
    methods = objective(opts.method, opts.alpha, opts.T)  # a bad objective fails before any training
    sdata = view_data(d, opts.student_view)
    t_acc: float | None = None
    if _is_outputs_file(opts.teacher):
        ft = FileTeacher(opts.teacher)
        assert d.train.y is not None
        ft.check(d.train.y, d.train.index)
        tt: Teacher = ft
    else:
        tdata = view_data(d, opts.teacher_view)
        if is_model_name(opts.teacher):
            rt = ctx.train(opts.teacher, "teacher", data=tdata, epochs=opts.teacher_epochs)
            module: Teacher | nn.Module = rt.student
            t_acc = rt.test["acc"]
        else:
            module = ctx.teacher(opts.teacher, tdata)
            t_acc = teacher_acc(module, tdata)
        tt = PairedTeacher(module, tdata.train)
    saved = None if opts.save_teacher_outputs is None else \
        str(write_teacher_outputs(tt, d.train, opts.save_teacher_outputs))
    baseline = ctx.train(opts.student, "baseline", data=sdata).test["acc"] if opts.baseline else None
    trainable = Distiller(ctx.model(opts.student, data=sdata), tt, create_methods(methods))

    def extra() -> dict[str, Any]:
        return {"teacher": opts.teacher if _is_outputs_file(opts.teacher) else model_name(opts.teacher),
                "teacher_acc": t_acc, "views": {"teacher": opts.teacher_view, "student": opts.student_view},
                "teacher_outputs": saved, **({} if baseline is None else {"baseline_acc": baseline})}

    # no report teacher: the paired teacher answers for training-split ids of its own view only
    return ctx.run(trainable, data=sdata, extra=extra)
