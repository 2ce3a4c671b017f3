"""DAFL: Data-Free Learning of Student Networks (Chen et al., ICCV 2019)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.synth import register_synth
from kdlab.synth._generative import GeneratorSynth


def one_hot_loss(logits: Tensor) -> Tensor:
    """``CE(t, argmax t)`` averaged over the batch: the teacher should be confident on ``G(z)``. ``[B, C]``."""
    return F.cross_entropy(logits, logits.argmax(1))


def activation_loss(features: Tensor) -> Tensor:
    """``−mean |f|`` over every element of the teacher's penultimate features ``[B, D]``: real inputs
    excite the teacher's filters strongly."""
    return -features.abs().mean()


def information_entropy_loss(logits: Tensor) -> Tensor:
    """``Σ_c p̄_c log10 p̄_c`` with ``p̄ = mean_b softmax(t_b)`` (the negative entropy of the batch's mean
    prediction, in base 10 as the reference code): minimised when the classes are balanced. ``[B, C]``."""
    p = F.softmax(logits, dim=1).mean(0)
    return (p * torch.log10(p)).sum()


@register_synth("dafl")
class DAFL(GeneratorSynth):
    """DAFL: Data-Free Learning of Student Networks (Chen et al., ICCV 2019).

    The generator minimises ``oh·L_oh + a·L_a + ie·L_ie`` on the frozen teacher (one-hot,
    activation and information-entropy losses, see the functions above); the student is distilled on
    the same (detached) batch. Defaults: the reference code's MNIST settings (``oh 1``, ``ie 5``,
    ``a 0.1``, latent 100, generator Adam at lr 0.2).
    """

    def __init__(self, batch_size: int = 256, nz: int = 100, ngf: int = 64, lr: float = 0.2,
                 oh: float = 1.0, a: float = 0.1, ie: float = 5.0) -> None:
        super().__init__(batch_size, nz, ngf, lr, (0.9, 0.999))
        self.oh, self.a, self.ie = oh, a, ie

    def step(self) -> Tensor:
        self.generator.train()
        x = self.generator(self.z(self.batch_size))
        out = self.teacher(x)
        feats = out.features.get("pooled", out.logits)
        terms = {"oh": self.oh * one_hot_loss(out.logits), "a": self.a * activation_loss(feats.flatten(1)),
                 "ie": self.ie * information_entropy_loss(out.logits)}
        self.update(sum(terms.values()))  # type: ignore[arg-type]
        self.last = {f"synth_{k}": float(v.detach()) for k, v in terms.items()}
        self.count += 1
        return x.detach()  # the batch the generator was scored on, as in the reference
