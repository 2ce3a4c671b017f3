"""Lifelong learning with Learning without Forgetting (Li & Hoiem; ECCV 2016, TPAMI 2017).

A model trained on some classes learns new classes from new-class data only (the old data is
gone). Its old head is kept, a new head is added on its pooled embedding, and while the new head
learns the new labels, the old head is distilled towards the frozen old model's answers on the new
images (KD at T = 2, weight λ_o = 1, as in the paper), which slows forgetting. Without the
distillation term this is plain fine-tuning.

Accuracy is reported two ways on the full test set: *task-aware* (the argmax among the sample's own
task's classes, LwF's multi-head setting) and *class-incremental* (the argmax over all classes).
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.api import Result, get_data, train
from kdlab.core import Batch, DataInfo, Outputs
from kdlab.data import DataSplits
from kdlab.errors import ConfigError, IncompatibleError
from kdlab.evaluate.metrics import predict
from kdlab.methods._common import kl_div_soft
from kdlab.models.contract import as_outputs
from kdlab.schemes._common import check_classes, finish, is_model_name, restrict, schedule, sub_dir
from kdlab.teachers.frozen import FrozenTeacher


class ExpandedModel(nn.Module):
    """An old model (its logits = ``old_classes``) plus a new linear head on its ``pooled``
    embedding (``new_classes``); ``forward`` returns logits over ``num_classes`` in the union's
    label order (classes in neither list get −1e4)."""

    def __init__(self, old: nn.Module, old_classes: Sequence[int], new_classes: Sequence[int], num_classes: int,
                 embed_dim: int) -> None:
        super().__init__()
        self.backbone = old
        self.new_head = nn.Linear(embed_dim, len(new_classes))
        self.register_buffer("old_idx", torch.tensor(list(old_classes), dtype=torch.long))
        self.register_buffer("new_idx", torch.tensor(list(new_classes), dtype=torch.long))
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Outputs:
        o = as_outputs(self.backbone(x))
        new = self.new_head(o.features["pooled"])
        z = o.logits.new_full((o.logits.shape[0], self.num_classes), -1e4)
        z[:, self.old_idx] = o.logits
        z[:, self.new_idx] = new.to(z.dtype)
        return Outputs(z, o.features)


def expand(old: nn.Module, old_classes: Sequence[int], new_classes: Sequence[int], num_classes: int,
           sample: Tensor) -> ExpandedModel:
    """A trainable copy of ``old`` with a new head (``sample``: a few inputs, to read the embedding size)."""
    model = copy.deepcopy(old)
    for p in model.parameters():
        p.requires_grad_(True)
    with torch.no_grad():
        was = model.training
        model.eval()
        o = as_outputs(model(sample))
        model.train(was)
    if "pooled" not in o.features:
        raise IncompatibleError(f"LwF adds a head on the 'pooled' feature; the model has {sorted(o.features)}")
    if o.logits.shape[-1] != len(old_classes):
        raise IncompatibleError(f"the old model predicts {o.logits.shape[-1]} classes but {len(old_classes)} old "
                                f"classes were given")
    return ExpandedModel(model, old_classes, new_classes, num_classes, o.features["pooled"].shape[-1])


class LwF(nn.Module):
    """Trainable for the new task: ``ce`` on the new head (softmax over the new classes, as with
    LwF's separate task head) + ``lwf`` = weight·T²·KL(old model ‖ old head) on every batch."""

    def __init__(self, model: ExpandedModel, old: FrozenTeacher, T: float = 2.0, weight: float = 1.0) -> None:
        super().__init__()
        self.student = model
        self._old = [old]
        self.T, self.weight = T, weight
        lut = torch.full((model.num_classes,), -100, dtype=torch.long)
        lut[model.new_idx] = torch.arange(len(model.new_idx))
        self.register_buffer("lut", lut)

    def prepare(self, batch: Batch, info: DataInfo) -> None:
        if batch.targets is not None and bool((self.lut[batch.targets] < 0).any()):
            raise IncompatibleError("the new-task data holds samples of classes outside the new classes")

    def forward(self, batch: Batch) -> tuple[Outputs, dict[str, Tensor]]:
        s = self.student(batch.inputs)
        terms: dict[str, Tensor] = {}
        if batch.targets is not None:
            terms["ce"] = F.cross_entropy(s.logits[:, self.student.new_idx], self.lut[batch.targets], ignore_index=-100)
        if self.weight > 0:
            t = self._old[0](batch).logits
            terms["lwf"] = self.weight * self.T * self.T * kl_div_soft(s.logits[:, self.student.old_idx], t, self.T)
        return s, terms


def task_accuracies(model: nn.Module, data: DataSplits, old_classes: Sequence[int], new_classes: Sequence[int]) -> dict[str, float]:
    """Test accuracy on old-class and new-class samples, task-aware and class-incremental."""
    y = data.test.y
    assert y is not None
    z = predict(model, data.test)
    out: dict[str, float] = {}
    for name, cls in (("old", list(old_classes)), ("new", list(new_classes))):
        c = torch.tensor(cls, dtype=torch.long)
        rows = torch.isin(y, c)
        if not rows.any():
            continue
        pred_all = z[rows].argmax(1)
        pred_task = c[z[rows][:, c].argmax(1)]
        out[f"{name}_acc"] = float((pred_all == y[rows]).double().mean())
        out[f"{name}_acc_task_aware"] = float((pred_task == y[rows]).double().mean())
    rows = torch.isin(y, torch.tensor([*old_classes, *new_classes], dtype=torch.long))
    out["all_acc"] = float((z[rows].argmax(1) == y[rows]).double().mean())
    return out


def lifelong(model: str | nn.Module, data: str | DataSplits, old_classes: Sequence[int],
             new_classes: Sequence[int] | None = None, *, epochs: int = 10, old_epochs: int | None = None,
             T: float = 2.0, weight: float = 1.0, baseline: bool = False, seed: int = 0, out: str | None = None,
             progress: bool = False, **train_options: Any) -> Result:
    """Learn ``new_classes`` (default: all the others) on top of a model of ``old_classes``.

    model: a model name (trained here on the old classes for ``old_epochs``), or a trained module
    whose output j is class ``old_classes[j]``. The new task trains on new-class data only, for
    ``epochs``, keeping the last epoch (no old-class labels are used to pick it).
    ``baseline=True`` also fine-tunes without the distillation term.

    ``Result.extra``: ``before`` (the old model on old classes), ``lwf`` and, when asked,
    ``finetune``: each a dict of ``old_acc``, ``new_acc`` (class-incremental),
    ``old_acc_task_aware``, ``new_acc_task_aware`` and ``all_acc``.

        r = lifelong("cnn_small", "fashion-mnist", old_classes=range(5), baseline=True)
    """
    d = get_data(data, seed=seed)
    old_c = check_classes(list(old_classes), d.num_classes, "old_classes")
    new_c = [c for c in range(d.num_classes) if c not in old_c] if new_classes is None else \
        check_classes(list(new_classes), d.num_classes, "new_classes")
    if set(old_c) & set(new_c):
        raise ConfigError(f"old and new classes overlap: {sorted(set(old_c) & set(new_c))}")
    if not new_c:
        raise ConfigError("no new classes to learn")
    old_data, new_data = restrict(d, old_c, remap=True), restrict(d, new_c, remap=False)
    if is_model_name(model):
        old = train(model, old_data, epochs=old_epochs or epochs, seed=seed, out=sub_dir(out, "old"),
                    progress=progress, **train_options).student
    elif isinstance(model, nn.Module):
        old = model
    else:
        raise ConfigError("lifelong needs a model name or a trained module for the old classes")
    before = task_accuracies(_OldOnly(old, old_c, d.num_classes), d, old_c, [])
    sample = d.train.gather(torch.arange(min(8, len(d.train))))
    sched = schedule(epochs, train_options)
    teacher = FrozenTeacher(copy.deepcopy(old))

    def run(w: float, name: str) -> Result:
        trainable = LwF(expand(old, old_c, new_c, d.num_classes, sample), teacher, T=T, weight=w)
        return finish(trainable, new_data, sched, seed=seed, progress=progress, out=sub_dir(out, name),
                      use_best=False, command="lifelong")

    r = run(weight, "lwf")
    r.test = _full_test(r.student, d)
    r.extra.update(before=before, lwf=task_accuracies(r.student, d, old_c, new_c), old_classes=old_c, new_classes=new_c)
    if baseline:
        rb = run(0.0, "finetune")
        r.extra["finetune"] = task_accuracies(rb.student, d, old_c, new_c)
    return r


class _OldOnly(nn.Module):
    def __init__(self, old: nn.Module, old_classes: list[int], num_classes: int) -> None:
        super().__init__()
        self.old, self.idx, self.n = old, torch.tensor(old_classes), num_classes

    def forward(self, x: Tensor) -> Tensor:
        o = as_outputs(self.old(x)).logits
        z = o.new_full((o.shape[0], self.n), -1e4)
        z[:, self.idx] = o
        return z


def _full_test(model: nn.Module, d: DataSplits) -> dict[str, float]:
    from kdlab.api import evaluate

    return evaluate(model, d)
