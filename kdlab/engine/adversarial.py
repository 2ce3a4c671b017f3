"""Adversarial training and adversarially robust distillation as a trainable, not a second loop.

:class:`Adversarial` wraps any :class:`~kdlab.engine.distiller.Distiller`: its ``forward(batch)``
crafts a PGD perturbation of ``batch.inputs`` against the current student, then hands the inner
trainable a batch whose student inputs are the adversarial ones and whose live teacher (if any)
sees the clean ones (``Batch.teacher_inputs``). The loop, checkpointing, resume and torchrun are
untouched; the student, the methods and the teacher never know. Because the perturbation is
crafted inside ``forward``, it is always against the weights of this step, as in the papers.

What the inner objective then computes:

* ``train`` + ``ce`` = PGD adversarial training (Madry et al., ICLR 2018): CE on x_adv, examples
  maximising CE (``target="labels"``).
* ``distill`` + ``kd`` with ``target="labels"`` ≈ ARD (Goldblum et al., AAAI 2020):
  α·T²·KL(T(x) ‖ S(x_adv)) + (1 − α)·CE(S(x_adv), y). ARD's CE term is on the clean input; here it
  is on x_adv (the student sees only x_adv in a step).
* ``distill`` + ``kd`` (α = 1, T = 1) with ``target="teacher"`` ≈ RSLAD (Zi et al., ICCV 2021):
  examples maximise KL(T(x) ‖ S(x')), the student minimises KL(T(x) ‖ S(x_adv)); RSLAD adds
  a 1/6-weighted clean term KL(T(x) ‖ S(x)), omitted here.

ε and the step size are in [0, 1] pixel units, mapped through the data's normalisation (see
:mod:`kdlab.evaluate.attack`); crafting runs the student in eval mode (BatchNorm statistics are not
updated by the attack's forward passes).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from kdlab.core import Batch, DataInfo, Outputs
from kdlab.engine.distiller import Distiller
from kdlab.errors import ConfigError
from kdlab.evaluate.attack import LossFn, PixelModel, attack_pixels
from kdlab.spec import Spec


class AdversarialSpec(Spec):
    """The ``adversarial:`` config section (``kdlab train|distill --adversarial pgd``)."""

    attack: Literal["pgd"] = "pgd"
    eps: float = Field(0.1, ge=0, le=1)  # L∞ radius in [0, 1] pixel units
    steps: int = Field(10, ge=1)  # PGD steps per training batch
    step_size: float | None = Field(None, gt=0)  # pixel units; default 2.5 ε / steps
    # what the examples maximise: CE with the labels (PGD-AT, ARD), or KL from the teacher's soft
    # labels on the clean input (RSLAD; needs a teacher)
    target: Literal["labels", "teacher"] = "labels"


class Adversarial(nn.Module):
    """``forward(batch) -> (student Outputs on x_adv, {term: loss})``: ``inner`` on PGD examples.

    mean, std: ``[C]`` the normalisation the student's inputs went through (pixels in [0, 1]).
    """

    def __init__(self, inner: Distiller, mean: Tensor, std: Tensor, *, eps: float = 0.1, steps: int = 10,
                 step_size: float | None = None, target: Literal["labels", "teacher"] = "labels",
                 seed: int = 0) -> None:
        super().__init__()
        if target == "teacher" and inner.teacher is None:
            raise ConfigError("adversarial.target=teacher crafts examples against the teacher's soft labels: "
                              "give a teacher (kdlab distill), or use adversarial.target=labels")
        self.inner = inner
        self.eps, self.steps, self.step_size, self.target = eps, steps, step_size, target
        self.register_buffer("mean", mean.reshape(-1).float().clone(), persistent=False)
        self.register_buffer("std", std.reshape(-1).float().clone(), persistent=False)
        self._gen = [torch.Generator().manual_seed(seed)]  # a list keeps it out of the module state

    mean: Tensor
    std: Tensor

    @property
    def student(self) -> nn.Module:
        return self.inner.student

    def prepare(self, batch: Batch, info: DataInfo) -> None:
        self.inner.prepare(batch, info)

    def set_progress(self, epoch: int, epochs: int) -> None:
        self.inner.set_progress(epoch, epochs)

    def perturb(self, batch: Batch) -> Tensor:
        """PGD inputs ``[B, C, H, W]`` (normalised like ``batch.inputs``) against the current student."""
        x = batch.inputs
        if not isinstance(x, Tensor) or x.dim() != 4:
            raise ConfigError("adversarial training needs image inputs [B, C, H, W] with pixels in [0, 1]")
        student = self.inner.student
        was = student.training
        student.eval()
        net = PixelModel(student, self.mean, self.std)
        try:
            p = net.to_pixels(x.detach()).clamp(0, 1)
            loss_fn: LossFn
            if self.target == "teacher":
                teacher = self.inner.teacher
                assert teacher is not None
                with torch.no_grad():
                    soft = F.softmax(teacher(batch.for_teacher()).logits.float(), 1)

                def kl(logits: Tensor, rows: Tensor) -> Tensor:
                    return F.kl_div(F.log_softmax(logits.float(), 1), soft[rows], reduction="none").sum(1)

                loss_fn = kl
                target = torch.arange(len(p))
            else:
                if batch.targets is None:
                    raise ConfigError("adversarial.target=labels needs labelled batches")
                loss_fn, target = _ce, batch.targets
            a = attack_pixels(net, p, target, kind="pgd", eps=self.eps, steps=self.steps, step_size=self.step_size,
                              generator=self._gen[0], loss_fn=loss_fn)
        finally:
            student.train(was)
        return (a - net.mean) / net.std

    def forward(self, batch: Batch) -> tuple[Outputs, dict[str, Tensor]]:
        x_adv = self.perturb(batch)
        # the teacher answers the clean view, the student learns from the adversarial one
        clean = batch.inputs if batch.teacher_inputs is None else batch.teacher_inputs
        return self.inner(replace(batch, inputs=x_adv.detach(), teacher_inputs=clean))


def _ce(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y, reduction="none")
