"""Curriculum Temperature KD: a learnable temperature trained adversarially (gradient reversal)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from kdlab.core import Batch, Method, Outputs
from kdlab.methods import register_method
from kdlab.methods._logits import flatten_tokens
from kdlab.methods._logitstd import maybe_standardize


class _GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by −λ."""

    @staticmethod
    def forward(ctx, x: Tensor, lambda_: float) -> Tensor:
        ctx.lambda_ = lambda_
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.lambda_ * grad, None


def gradient_reversal(x: Tensor, lambda_: float) -> Tensor:
    return _GradientReversal.apply(x, lambda_)


def cosine_lambda(epoch: int, lambda_min: float = 0.0, lambda_max: float = 1.0, decay_epochs: int = 10) -> float:
    """The curriculum: λ rises from λ_min to λ_max along a half cosine over ``decay_epochs``.

    ``epoch`` counts from 1 as in the authors' loop (the engine's first epoch is 1 here)."""
    if decay_epochs <= 0:
        return lambda_max
    i = min(max(epoch, 0), decay_epochs)
    return lambda_min + (lambda_max - lambda_min) * 0.5 * (1.0 - math.cos(math.pi * i / decay_epochs))


def soft_kl(student_logits: Tensor, teacher_logits: Tensor, T: Tensor | float) -> Tensor:
    """T² · KL(softmax(t/T) ‖ softmax(s/T)), batch mean; ``T`` may be a (learnable) tensor."""
    ls = torch.log_softmax(student_logits / T, dim=-1)
    lt = torch.log_softmax(teacher_logits / T, dim=-1)
    return T * T * (lt.exp() * (lt - ls)).sum(-1).mean()


class GlobalTemperature(nn.Module):
    """T = t_start + t_end · sigmoid(GRL(θ)), θ one learnable scalar (initialised to 1 as in CTKD)."""

    def __init__(self, t_start: float = 1.0, t_end: float = 20.0, init: float = 1.0) -> None:
        super().__init__()
        self.t_start, self.t_end = t_start, t_end
        self.raw = nn.Parameter(torch.full((1,), float(init)))

    def forward(self, lambda_: float) -> Tensor:
        return self.t_start + self.t_end * torch.sigmoid(gradient_reversal(self.raw, lambda_)).squeeze(0)


@register_method("ctkd")
class CTKD(Method):
    """Curriculum Temperature for Knowledge Distillation (Li, Li, Yang, Zhao, Song, Luo, Li, Yang; AAAI 2023).

    loss = weight · T² · KL(softmax(t/T) ‖ softmax(s/T)) with a learnable global temperature
    T = t_start + t_end · sigmoid(θ) ∈ (1, 21). θ passes a gradient-reversal layer, so while the
    student minimises the loss the temperature *maximises* it, scaled by λ; λ follows a cosine
    curriculum from λ_min=0 to λ_max=1 over the first 10 epochs (read from :meth:`set_progress`;
    before any call λ = λ_max). Defaults are the authors' CIFAR-100 script (zhengli97/CTKD:
    ``--t_start 1 --t_end 20 --decay_max 0 --decay_min -1 --decay_loops 10``, KD weight 0.9 with
    ``ce`` at 0.1). θ is a parameter of this method, so the optimiser trains it with the student
    (including weight decay, as in the reference). ``logit_stand`` z-scores both sides' logits
    before the learned temperature. Token logits ``[B, L, V]`` are flattened over the mask.
    """

    paper_ce = 0.1  # α = 0.9 on the soft term, 1 − α on the labels

    def __init__(self, t_start: float = 1.0, t_end: float = 20.0, lambda_min: float = 0.0, lambda_max: float = 1.0,
                 decay_epochs: int = 10, weight: float = 0.9, logit_stand: bool = False) -> None:
        super().__init__()
        if t_start <= 0 or t_end < 0:
            raise ValueError(f"need t_start > 0 and t_end >= 0, got {t_start}, {t_end}")
        self.temp = GlobalTemperature(t_start, t_end)
        self.lambda_min, self.lambda_max, self.decay_epochs = lambda_min, lambda_max, decay_epochs
        self.weight, self.logit_stand = weight, logit_stand
        # None until set_progress runs; Method's own type for epoch (from set_progress) is int
        self.epoch: int | None = None  # type: ignore[assignment]

    @property
    def lambda_(self) -> float:
        if self.epoch is None:
            return self.lambda_max
        return cosine_lambda(self.epoch + 1, self.lambda_min, self.lambda_max, self.decay_epochs)

    @property
    def temperature(self) -> float:
        """The current temperature (for logging)."""
        with torch.no_grad():
            return float(self.temp(0.0))

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert teacher is not None
        s, t, _ = flatten_tokens(student, teacher)
        assert t is not None
        if s.shape[0] == 0:
            return {}
        s, t = maybe_standardize(s, t, self.logit_stand)
        assert t is not None
        T = self.temp(self.lambda_).to(s.dtype)
        return {"ctkd": self.weight * soft_kl(s, t, T)}
