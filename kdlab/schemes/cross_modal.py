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

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.api import Result, distill, get_data, train
from kdlab.core import Batch, Outputs, Teacher
from kdlab.data import DataSplits, Split
from kdlab.errors import ConfigError
from kdlab.schemes._common import as_teacher, is_model_name, model_name, sub_dir, teacher_acc
from kdlab.teachers.from_file import FileTeacher, save_outputs
from kdlab.teachers.frozen import FrozenTeacher

VIEWS = ("full", "lowres:K", "blur:K", "edges", "gray", "channel:i")


def _apply(x: Tensor, view: str) -> Tensor:
    name, _, arg = view.partition(":")
    if name == "full":
        return x
    if x.dim() != 4:
        raise ConfigError(f"view {view!r} needs images [N, C, H, W], got shape {tuple(x.shape)}")
    if name in ("lowres", "blur"):
        try:
            k = int(arg)
        except ValueError:
            raise ConfigError(f"view {view!r}: give an integer factor, e.g. {name}:2") from None
        if k < 1 or k > min(x.shape[-2:]):
            raise ConfigError(f"view {view!r}: factor must be in 1..{min(x.shape[-2:])}")
        small = F.avg_pool2d(x, k, ceil_mode=True)
        return small if name == "lowres" else F.interpolate(small, size=x.shape[-2:], mode="nearest")
    if name == "edges":
        kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        w = torch.stack([kx, kx.t()]).unsqueeze(1)  # [2, 1, 3, 3]
        c = x.shape[1]
        g = F.conv2d(x.reshape(-1, 1, *x.shape[-2:]), w, padding=1)
        return g.pow(2).sum(1, keepdim=True).sqrt().reshape(x.shape[0], c, *x.shape[-2:])
    if name == "gray":
        return x.mean(1, keepdim=True)
    if name == "channel":
        try:
            i = int(arg)
        except ValueError:
            raise ConfigError(f"view {view!r}: give a channel number, e.g. channel:0") from None
        if not 0 <= i < x.shape[1]:
            raise ConfigError(f"view {view!r}: the images have {x.shape[1]} channel(s)")
        return x[:, i : i + 1]
    raise ConfigError(f"unknown view {view!r} (views: {', '.join(VIEWS)})")


def _view_split(s: Split, view: str, chunk: int = 4096) -> Tensor:
    parts = []
    for start in range(0, len(s), chunk):
        x = s.x[start : start + chunk].float()
        parts.append(_apply(x * s.scale if s.scale != 1.0 else x, view))
    return torch.cat(parts)


def view_data(data: DataSplits, view: str) -> DataSplits:
    """The same samples (same ids, labels and split membership) seen through ``view``, with
    normalisation statistics recomputed on the viewed training split."""
    if view == "full":
        return data
    tr, va, te = (_view_split(s, view) for s in (data.train, data.val, data.test))
    if tr.dim() == 4:
        mean, std = tr.mean(dim=(0, 2, 3)), tr.std(dim=(0, 2, 3)).clamp_min(1e-6)
    else:
        mean, std = tr.mean(0), tr.std(0).clamp_min(1e-6)

    def mk(s: Split, x: Tensor) -> Split:
        return replace(s, x=x.contiguous(), mean=mean, std=std, scale=1.0)

    return replace(data, name=f"{data.name}[{view}]", train=mk(data.train, tr), val=mk(data.val, va),
                   test=mk(data.test, te), augment=None)


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
            self.teacher.to(device)  # type: ignore[union-attr]
        return self


def cross_modal(teacher: str | nn.Module | Teacher | Path, student: str | nn.Module, data: str | DataSplits, *,
                teacher_view: str = "full", student_view: str = "lowres:2", method: str = "kd",
                alpha: float | None = 0.9, T: float | None = 4.0, epochs: int = 10, teacher_epochs: int | None = None,
                baseline: bool = False, save_teacher_outputs: str | Path | None = None, seed: int = 0,
                out: str | None = None, progress: bool = False, **train_options: Any) -> Result:
    """Distill a teacher that sees ``teacher_view`` into a student that sees ``student_view``.

    teacher: a model name (trained here on the teacher's view for ``teacher_epochs``), a module
    trained on that view, or a ``.npy``/``.npz`` file of per-sample outputs over the training split
    (a black-box teacher; ``teacher_view`` is then irrelevant). ``alpha=1`` learns from the
    teacher's outputs alone, without labels. ``baseline=True`` also trains the student on its view
    from labels alone. ``save_teacher_outputs`` writes the teacher's outputs over the training split
    to a ``.npz`` usable as a file teacher later.

    ``Result.extra``: ``teacher_acc`` (teacher on its view's test split; not available for a file
    teacher), ``baseline_acc`` when asked, ``views``.

        r = cross_modal("cnn_small", "cnn_tiny", "fashion-mnist", student_view="lowres:2", baseline=True)
        r = cross_modal("outputs.npz", "cnn_tiny", "fashion-mnist", student_view="full", alpha=1.0)
    """
    d = get_data(data, seed=seed)
    sdata = view_data(d, student_view)
    t_acc: float | None = None
    if isinstance(teacher, (str, Path)) and Path(teacher).suffix in (".npy", ".npz"):
        ft = FileTeacher(teacher)
        assert d.train.y is not None
        ft.check(d.train.y, d.train.index)
        tt: Teacher = ft
        tname = str(teacher)
    else:
        tdata = view_data(d, teacher_view)
        if is_model_name(teacher):
            rt = train(teacher, tdata, epochs=teacher_epochs or epochs, seed=seed, out=sub_dir(out, "teacher"),
                       progress=progress, **train_options)
            module: Any = rt.student
            t_acc = rt.test["acc"]
        else:
            module = as_teacher(teacher, tdata)
            t_acc = teacher_acc(module, tdata)
        tt = PairedTeacher(module, tdata.train)
        tname = model_name(teacher)
    saved = None if save_teacher_outputs is None else str(save_outputs(tt, d.train, save_teacher_outputs))
    r = distill(tt, student, sdata, method=method, alpha=alpha, T=T, epochs=epochs, seed=seed,
                out=sub_dir(out, "student"), progress=progress, **train_options)
    r.extra.update(teacher=tname, teacher_acc=t_acc, views={"teacher": teacher_view, "student": student_view},
                   teacher_outputs=saved)
    if baseline:
        if not isinstance(student, str):
            raise ConfigError("baseline=True needs the student as a model name (a fresh copy is trained)")
        r.extra["baseline_acc"] = train(student, sdata, epochs=epochs, seed=seed, out=sub_dir(out, "baseline"),
                                        progress=progress, **train_options).test["acc"]
    return r
