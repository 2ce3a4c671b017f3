"""The contracts every part of kdlab speaks: Batch, Outputs, Teacher, Method, DataInfo.

Flow of one step::

    Batch ─► Teacher ─► Outputs (frozen, no graph) ┐
      └────► Student ─► Outputs (with graph) ──────┴─► Method(s) ─► {name: weighted loss} ─► sum

Text and language models only change ``Batch.inputs`` (a dict of tensors) and the logits' shape
(``[B, L, V]`` with ``Outputs.mask``); the contracts stay the same.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Iterator, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

Inputs = Tensor | dict[str, Tensor]


def _to(x: Inputs, device: torch.device | str) -> Inputs:
    if isinstance(x, dict):
        return {k: v.to(device, non_blocking=True) for k, v in x.items()}
    return x.to(device, non_blocking=True)


@dataclass
class Batch:
    """One mini-batch.

    inputs:  ``[B, C, H, W]`` images, ``[B, D]`` vectors, or a dict (``input_ids``, ``attention_mask``…).
    targets: ``[B]`` class ids, or None for unlabeled data.
    index:   ``[B]`` sample ids in the dataset split, so a cached teacher can answer.
    view:    ``[B]`` augmentation view ids; ``(index, view)`` identifies exactly what the model saw.
    mix:     for mixed inputs (mixup/cutmix): ``(partner targets [B] or None, λ [B])``; each input
             is λ of the sample ``targets`` labels and 1 − λ of its partner. None: not mixed.
    teacher_inputs: what a live teacher sees instead of ``inputs`` (another view of the same samples,
             ``data.teacher_view``); None: the same view as the student (consistent teaching).
    """

    inputs: Inputs
    targets: Tensor | None = None
    index: Tensor | None = None
    view: Tensor | None = None
    mix: tuple[Tensor | None, Tensor] | None = None
    teacher_inputs: Inputs | None = None

    def for_teacher(self) -> "Batch":
        """The batch a live teacher answers: ``teacher_inputs`` in place of ``inputs`` when set."""
        return self if self.teacher_inputs is None else replace(self, inputs=self.teacher_inputs, teacher_inputs=None)

    def __len__(self) -> int:
        x = self.inputs
        return int(next(iter(x.values())).shape[0] if isinstance(x, dict) else x.shape[0])

    def to(self, device: torch.device | str) -> "Batch":
        return replace(
            self,
            inputs=_to(self.inputs, device),
            targets=None if self.targets is None else self.targets.to(device),
            index=None if self.index is None else self.index.to(device),
            view=None if self.view is None else self.view.to(device),
            mix=None if self.mix is None else (None if self.mix[0] is None else self.mix[0].to(device),
                                               self.mix[1].to(device)),
            teacher_inputs=None if self.teacher_inputs is None else _to(self.teacher_inputs, device),
        )


@dataclass
class Outputs:
    """What every model returns.

    logits:   ``[B, C]`` (or ``[B, L, V]`` for token models, with ``mask`` ``[B, L]``).
    features: named intermediate tensors, e.g. ``stem`` ``[B, C0, H, W]``, ``layer1..layerN``
              ``[B, Ci, Hi, Wi]``, ``layerN_preact`` (before the last ReLU of that stage, for
              methods such as OFD/AB), ``pooled`` ``[B, D]`` (the penultimate embedding).
    """

    logits: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)
    mask: Tensor | None = None

    def detach(self) -> "Outputs":
        return Outputs(
            self.logits.detach(),
            {k: v.detach() for k, v in self.features.items()},
            None if self.mask is None else self.mask.detach(),
        )


@dataclass(frozen=True)
class DataInfo:
    """What a method or model may need to know about the data before training."""

    num_classes: int
    num_train: int
    input_shape: tuple[int, ...]


@runtime_checkable
class Teacher(Protocol):
    """Anything that maps a Batch to Outputs without ever being trained.

    Implementations: a frozen module, an ensemble, a cache reader, an ONNX session, a file of
    per-sample outputs. The student side never knows which one it has.
    """

    def __call__(self, batch: Batch) -> Outputs: ...


@runtime_checkable
class Trainable(Protocol):
    """What :func:`kdlab.engine.loop.fit` trains: an ``nn.Module`` whose ``forward(batch)`` returns
    ``(Outputs of the deployed student, {term: already-weighted loss})``.

    ``student`` is what is evaluated every epoch, checkpointed and deployed; everything in the
    module tree (student, connectors, peers) is optimised; teachers are held outside it.
    Implementations: :class:`kdlab.engine.distiller.Distiller` (offline KD, training alone) and the
    schemes' trainables (a cohort of peers, a network with auxiliary exits, ...).
    """

    @property
    def student(self) -> nn.Module: ...

    def prepare(self, batch: Batch, info: DataInfo) -> None:
        """Called once with the first batch before the optimiser exists (connectors are built here)."""

    def set_progress(self, epoch: int, epochs: int) -> None:
        """Called at the start of every epoch (0-based)."""

    def __call__(self, batch: Batch) -> tuple[Outputs, dict[str, Tensor]]: ...

    # the nn.Module surface the loop uses
    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...
    def state_dict(self, *args: Any, **kwargs: Any) -> Any: ...
    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any: ...
    def train(self, mode: bool = True) -> Any: ...
    def to(self, *args: Any, **kwargs: Any) -> Any: ...


class Method(nn.Module):
    """A distillation method: ``forward(student, teacher, batch) -> {name: weighted loss}``.

    Subclasses set ``needs`` (``"logits"`` and/or feature names, or ``"features:*"`` for
    "all stage features") so the engine can refuse an impossible pairing before training.
    Connectors are built in :meth:`prepare` from real output shapes; they are submodules, so
    they train with the student and are saved in its checkpoint.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"logits"})
    family: ClassVar[str] = "response"
    # the cross-entropy weight the paper pairs with this method's default weight (Hinton KD:
    # 0.9·soft + 0.1·hard); an objective's default CE weight is the smallest among its methods
    paper_ce: ClassVar[float] = 1.0

    def prepare(self, student: Outputs, teacher: Outputs | None, info: DataInfo) -> None:
        """Called once with sample outputs before the optimiser exists. Raise IncompatibleError
        here (naming the shapes) when the pair cannot work. Default: check needs."""
        from kdlab.errors import IncompatibleError

        if teacher is None and self.needs:
            raise IncompatibleError(f"{type(self).__name__} needs a teacher")
        for need in self.needs:
            if need == "logits":
                continue
            for side, out in (("student", student), ("teacher", teacher)):
                if need not in out.features:  # type: ignore[union-attr]
                    raise IncompatibleError(
                        f"{type(self).__name__} needs feature {need!r} but the {side} only has "
                        f"{sorted(out.features)}"  # type: ignore[union-attr]
                    )

    def set_progress(self, epoch: int, epochs: int) -> None:
        """Called by the engine at the start of every epoch (0-based). Methods with warm-up or
        curriculum schedules (DKD, CTKD) read it; others ignore it."""
        self.epoch, self.epochs = epoch, epochs

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        raise NotImplementedError
