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
from dataclasses import replace
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from kdlab.core import Batch, DataInfo, Outputs
from kdlab.data import DataSplits
from kdlab.engine.run import Result
from kdlab.errors import ConfigError, IncompatibleError
from kdlab.evaluate.metrics import predict
from kdlab.methods._common import kl_div_soft
from kdlab.models.contract import as_outputs
from kdlab.models.expanded import ExpandedModel, expanded_spec
from kdlab.models.load import load_model
from kdlab.schemes._common import SchemeContext, check_classes, is_model_name, register_scheme, restrict
from kdlab.spec import Spec
from kdlab.teachers.frozen import FrozenTeacher


class LifelongOptions(Spec):
    """``scheme:`` options of ``kdlab lifelong``."""

    model: str = "cnn_small"  # old model: a model name (trained here, stage old/) or a checkpoint over old_classes
    old_classes: list[int] = Field([0, 1, 2, 3, 4], min_length=1)  # the classes the old model knows
    new_classes: list[int] | None = None  # the classes to learn (default: all the others)
    old_epochs: int | None = Field(None, ge=1)  # epochs of the old model trained here (default: train.epochs)
    T: float = Field(2.0, gt=0)  # temperature of the LwF term (the paper's 2)
    weight: float = Field(1.0, ge=0)  # weight λ_o of the LwF term (the paper's 1; 0 is plain fine-tuning)
    baseline: bool = True  # also fine-tune without the LwF term (stage finetune/)


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
    out = ExpandedModel(model, old_classes, new_classes, num_classes, o.features["pooled"].shape[-1])
    # what create_model("expanded", ...) would record, so the saved student rebuilds from its checkpoint
    setattr(out, "kdlab_spec", expanded_spec(out, getattr(old, "kdlab_spec", None)))
    return out


class LwF(nn.Module):
    """Trainable for the new task: ``ce`` on the new head (softmax over the new classes, as with
    LwF's separate task head) + ``lwf`` = weight·T²·KL(old model ‖ old head) on every batch."""

    lut: Tensor

    def __init__(self, model: ExpandedModel, old: FrozenTeacher, T: float = 2.0, weight: float = 1.0) -> None:
        super().__init__()
        self.student = model
        self._old = [old]
        self.T, self.weight = T, weight
        lut = torch.full((model.num_classes,), -100, dtype=torch.long)
        lut[model.new_idx] = torch.arange(len(model.new_idx))
        self.register_buffer("lut", lut)

    def set_progress(self, epoch: int, epochs: int) -> None:
        pass

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


def task_accuracies(model: nn.Module, data: DataSplits, old_classes: Sequence[int],
                    new_classes: Sequence[int]) -> dict[str, float]:
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


@register_scheme("lifelong", LifelongOptions)
def lifelong(ctx: SchemeContext, opts: LifelongOptions) -> Result:
    """Learn ``new_classes`` (default: all the others) on top of a model of ``old_classes``.

    The old model is ``opts.model`` trained here on the old classes (stage ``old/``) or a checkpoint
    whose output j is class ``old_classes[j]``. The new task trains on new-class data only, keeping
    the last epoch (no old-class labels are used to pick it); the LwF student is the scheme's run,
    plain fine-tuning (``baseline``) the stage ``finetune/``. Both start from the same new head. The
    summary's test metrics are over the full test set (every class).

    ``Result.extra``: ``before`` (the old model on old classes), ``lwf`` and, when asked,
    ``finetune``: each a dict of ``old_acc``, ``new_acc`` (class-incremental),
    ``old_acc_task_aware``, ``new_acc_task_aware`` and ``all_acc``; ``old_classes``, ``new_classes``.
    """
    d = ctx.data
    old_c = check_classes(opts.old_classes, d.num_classes, "old_classes")
    new_c = [c for c in range(d.num_classes) if c not in old_c] if opts.new_classes is None else \
        check_classes(opts.new_classes, d.num_classes, "new_classes")
    if set(old_c) & set(new_c):
        raise ConfigError(f"old and new classes overlap: {sorted(set(old_c) & set(new_c))}")
    if not new_c:
        raise ConfigError("no new classes to learn")
    old_data, new_data = restrict(d, old_c, remap=True), restrict(d, new_c, remap=False)
    if is_model_name(opts.model):
        old = ctx.train(opts.model, "old", data=old_data, epochs=opts.old_epochs or ctx.schedule.epochs).student
    else:
        old = load_model(opts.model)[0].eval()
    before = task_accuracies(_OldOnly(old, old_c, d.num_classes), d, old_c, [])
    sample = d.train.gather(torch.arange(min(8, len(d.train))))
    teacher = FrozenTeacher(copy.deepcopy(old))
    task = replace(new_data, test=d.test)  # new-class data to train on; every class to test on

    def learner(weight: float) -> LwF:
        torch.manual_seed(ctx.seed)  # the new head's initialisation: the same with and without distillation
        return LwF(expand(old, old_c, new_c, d.num_classes, sample), teacher, T=opts.T, weight=weight)

    finetune = None
    if opts.baseline:
        finetune = task_accuracies(ctx.run(learner(0.0), "finetune", data=task, use_best=False).student, d, old_c,
                                   new_c)
    trainable = learner(opts.weight)

    def extra() -> dict[str, Any]:
        return {"before": before, "lwf": task_accuracies(trainable.student, d, old_c, new_c),
                **({} if finetune is None else {"finetune": finetune}), "old_classes": old_c, "new_classes": new_c}

    return ctx.run(trainable, data=task, use_best=False, extra=extra)


class _OldOnly(nn.Module):
    def __init__(self, old: nn.Module, old_classes: list[int], num_classes: int) -> None:
        super().__init__()
        self.old, self.idx, self.n = old, torch.tensor(old_classes), num_classes

    def forward(self, x: Tensor) -> Tensor:
        o = as_outputs(self.old(x)).logits
        z = o.new_full((o.shape[0], self.n), -1e4)
        z[:, self.idx] = o
        return z

