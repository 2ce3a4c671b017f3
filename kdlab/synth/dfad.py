"""DFAD: Data-Free Adversarial Distillation (Fang et al., 2019)."""
from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from kdlab.models.contract import as_outputs
from kdlab.synth import register_synth
from kdlab.synth._generative import GeneratorSynth


def discrepancy(student_logits: Tensor, teacher_logits: Tensor, kind: str = "l1") -> Tensor:
    """The student–teacher discrepancy the generator maximises. ``[B, C]`` logits.

    ``l1``: mean absolute difference of the logits over all ``B·C`` entries (DFAD: the MAE keeps a
    gradient when the two already agree, where a KL saturates). ``kl``: ``KL(softmax t ‖ softmax s)``
    averaged over the batch (ZSKT).
    """
    if kind == "l1":
        return (student_logits - teacher_logits).abs().mean()
    if kind == "kl":
        t = F.log_softmax(teacher_logits, 1)
        return (t.exp() * (t - F.log_softmax(student_logits, 1))).sum(1).mean()
    raise ValueError(f"unknown discrepancy {kind!r} (l1, kl)")


@register_synth("dfad")
class DFAD(GeneratorSynth):
    """DFAD: Data-Free Adversarial Distillation (Fang, Song, Wang, Shen, Wang, Song; arXiv 1912.11006, 2019).

    A min-max game: the generator maximises the student–teacher discrepancy (``discrepancy``,
    MAE on logits) on ``G(z)``, the student minimises its distillation loss on fresh ``G(z)``.
    ``student_steps`` student steps per generator step (the paper's 5), generator Adam at 1e-3,
    latent 256. The student minimises the same MAE (method ``mae``, the run's default objective here).
    """

    student_method = {"name": "mae"}

    def __init__(self, batch_size: int = 256, nz: int = 256, ngf: int = 64, lr: float = 1e-3,
                 student_steps: int = 5, loss: Literal["l1", "kl"] = "l1") -> None:
        super().__init__(batch_size, nz, ngf, lr, (0.9, 0.999))
        if student_steps < 1:
            raise ValueError(f"student_steps must be >= 1, got {student_steps}")
        self.student_steps, self.loss = student_steps, loss

    def step(self) -> Tensor:
        # the generator moves once every student_steps student steps, after them (as the reference)
        if self.count and self.count % self.student_steps == 0:
            self.generator.train()
            x = self.generator(self.z(self.batch_size))
            t = self.teacher(x).logits
            s = as_outputs(self.student(x)).logits
            d = discrepancy(s.float(), t.float(), self.loss)
            self.update(-d)  # ascend the discrepancy
            self.last = {"synth_discrepancy": float(d.detach())}
        self.count += 1
        return self.draw()
