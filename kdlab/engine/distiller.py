"""The trainable module: student + the objective's methods (with their connectors).

This is what the optimiser, DDP and the checkpoint see. The teacher is held outside the module
tree, so it is never trained, never wrapped by DDP and never saved with the student.
"""
from __future__ import annotations

from typing import Sequence, cast

import torch
from torch import Tensor, nn

from kdlab.core import Batch, DataInfo, Method, Outputs, Teacher
from kdlab.errors import IncompatibleError
from kdlab.models.contract import as_outputs


class Distiller(nn.Module):
    """``forward(batch) -> (student Outputs, {term: weighted loss})``.

    Offline KD: a student, a teacher and ``[ce, kd]``. Train a model alone: no teacher, ``[ce]``.
    Schemes build other trainables with the same ``forward`` contract (e.g. a cohort of peers).
    """

    def __init__(self, student: nn.Module, teacher: Teacher | None, methods: Sequence[Method]) -> None:
        super().__init__()
        self.student = student
        self.methods = nn.ModuleList(methods)
        self._teacher = [teacher]  # a list hides it from nn.Module registration

    @property
    def teacher(self) -> Teacher | None:
        return self._teacher[0]

    def set_teacher(self, teacher: Teacher | None) -> None:
        """Swap the teacher (e.g. a snapshot of the student taking over as teacher mid-run)."""
        self._teacher[0] = teacher

    @torch.no_grad()
    def prepare(self, batch: Batch, info: DataInfo) -> None:
        """Run one sample batch through both sides so methods build connectors and check the pair."""
        was = self.student.training
        self.student.eval()
        s = as_outputs(_probe("student", self.student, batch.inputs, batch))
        self.student.train(was)
        t = _probe("teacher", self.teacher, batch, batch) if self.teacher is not None else None
        if t is not None and t.logits.shape[-1] != s.logits.shape[-1]:
            raise IncompatibleError(
                f"teacher predicts {t.logits.shape[-1]} classes but the student {s.logits.shape[-1]}")
        for m in self._methods():
            m.prepare(s, t, info)

    def _methods(self) -> list[Method]:
        return [cast(Method, m) for m in self.methods]

    def set_progress(self, epoch: int, epochs: int) -> None:
        for m in self._methods():
            m.set_progress(epoch, epochs)

    def forward(self, batch: Batch) -> tuple[Outputs, dict[str, Tensor]]:
        # the teacher first: its activations are freed before the student's graph holds memory, so the
        # allocator reuses warm pages (student-first measured 1.25x slower per KD step on CPU, resnet56 ->
        # resnet20, batch 128, one thread, interleaved in one process; end-to-end: benchmarks/speed.md)
        t = self.teacher(batch.for_teacher()) if self.teacher is not None else None
        s = as_outputs(self.student(batch.inputs))
        terms: dict[str, Tensor] = {}
        # under bf16 autocast the losses still run in float32: CPU autocast keeps log_softmax in bf16,
        # which would round a KL between near-equal distributions away
        with torch.autocast(s.logits.device.type, enabled=False):
            s32, t32 = _float32(s), (_float32(t) if t is not None else None)
            for m in self.methods:
                for k, v in m(s32, t32, batch).items():
                    terms[k] = terms[k] + v if k in terms else v
        return s32, terms


def _float32(o: Outputs) -> Outputs:
    """``o`` with its floating tensors in float32 (a no-op without autocast: same tensors back)."""
    def f(x: Tensor) -> Tensor:
        return x.float() if x.is_floating_point() and x.dtype != torch.float32 else x
    if o.logits.dtype == torch.float32 and all(v.dtype == torch.float32 or not v.is_floating_point()
                                               for v in o.features.values()):
        return o
    return Outputs(f(o.logits), {k: f(v) for k, v in o.features.items()}, o.mask)


def _probe(who: str, fn, arg, batch: Batch):
    """``fn(arg)``; a shape/type failure on the first batch is the pair not fitting the data."""
    try:
        return fn(arg)
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        x = batch.inputs
        shape = tuple(x.shape[1:]) if isinstance(x, Tensor) else {k: tuple(v.shape[1:]) for k, v in x.items()}
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise IncompatibleError(f"the {who} cannot take this dataset's inputs {shape}: {msg}") from None
