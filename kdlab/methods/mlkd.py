"""Multi-level logit distillation: instance-, batch- and class-level alignment at several temperatures."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from kdlab.core import Batch, Method, Outputs
from kdlab.methods import register_method
from kdlab.methods._logits import flatten_tokens
from kdlab.methods._logitstd import standardize


def instance_level(student_logits: Tensor, teacher_logits: Tensor, T: float) -> Tensor:
    """T² · KL(softmax(t/T) ‖ softmax(s/T)), batch mean (the instance-level alignment)."""
    ls = torch.log_softmax(student_logits / T, dim=1)
    lt = torch.log_softmax(teacher_logits / T, dim=1)
    return T * T * (lt.exp() * (lt - ls)).sum(1).mean()


def batch_level(student_logits: Tensor, teacher_logits: Tensor, T: float) -> Tensor:
    """‖P_t P_tᵀ − P_s P_sᵀ‖²_F / B: the B×B sample-similarity (Gram) matrices of the predictions."""
    ps = torch.softmax(student_logits / T, dim=1)
    pt = torch.softmax(teacher_logits / T, dim=1)
    return ((pt @ pt.t() - ps @ ps.t()) ** 2).sum() / ps.shape[0]


def class_level(student_logits: Tensor, teacher_logits: Tensor, T: float) -> Tensor:
    """‖P_tᵀ P_t − P_sᵀ P_s‖²_F / C: the C×C class-correlation matrices of the predictions."""
    ps = torch.softmax(student_logits / T, dim=1)
    pt = torch.softmax(teacher_logits / T, dim=1)
    return ((pt.t() @ pt - ps.t() @ ps) ** 2).sum() / ps.shape[1]


def _summed(term: Callable[[Tensor, Tensor, float], Tensor], student_logits: Tensor, teacher_logits: Tensor,
            temperatures: Sequence[float]) -> Tensor:
    """Σ over the (non-empty) ``temperatures`` of ``term(student_logits, teacher_logits, T)``, in order."""
    total = term(student_logits, teacher_logits, temperatures[0])
    for T in temperatures[1:]:
        total = total + term(student_logits, teacher_logits, T)
    return total


def mlkd_terms(student_logits: Tensor, teacher_logits: Tensor,
               temperatures: Sequence[float] = (2.0, 3.0, 4.0, 5.0, 6.0),
               logit_stand: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """(instance, batch, class) losses, each summed over ``temperatures``. Logits ``[N, C]``.

    ``logit_stand`` z-scores the logits of the instance-level term only, as the Logit
    Standardization authors' MLKD does; batch- and class-level terms use the raw logits.
    """
    if logit_stand:
        si, ti = standardize(student_logits), standardize(teacher_logits)
    else:
        si, ti = student_logits, teacher_logits
    inst = _summed(instance_level, si, ti, temperatures)
    bat = _summed(batch_level, student_logits, teacher_logits, temperatures)
    cls = _summed(class_level, student_logits, teacher_logits, temperatures)
    return inst, bat, cls


@register_method("mlkd")
class MLKD(Method):
    """Multi-Level Logit Distillation (Jin, Wang, Lin; CVPR 2023).

    loss = weight · Σ_{T ∈ temperatures} (w_inst · T²·KL_T + w_batch · ‖G_t−G_s‖²/B + w_class · ‖M_t−M_s‖²/C)
    with G = P Pᵀ (sample relations), M = Pᵀ P (class relations), P = softmax(z/T). The
    temperatures are the authors' (base T=4 plus 2, 3, 5, 6; Jin-Ying/Multi-Level-Logit-Distillation).

    Out of scope here: the paper's prediction augmentation on a second, strongly augmented view
    (the reference forwards weak and strong crops and sums the terms over both) and its
    confidence masks (in the reference they reduce to a factor ≈ ½ on the weak-view terms,
    because they multiply an already-averaged loss). This is the single-view loss with equal level
    weights; feed strongly augmented batches through the data pipeline to get the augmentation.
    Scale: the class-level term grows as (B/C)² (PᵀP sums to B over C² entries), so the reference
    weights, tuned for CIFAR-100 (C=100, B=64), make it dominate with few classes or large batches:
    on Fashion-MNIST (C=10, B=128, lr 0.05) it starts near 130 against CE 2.3 and training
    diverges (benchmarks/zoo). Lower ``w_class``/``w_batch`` there.
    Batch-level cost is O(B²), class-level O(C²): for token logits ``[B, L, V]`` (flattened over
    the student's mask, tokens acting as samples) with a large vocabulary set ``w_class=0``.
    ``logit_stand`` standardises the instance-level logits (see :func:`mlkd_terms`).
    """

    def __init__(self, temperatures: tuple[float, ...] = (2.0, 3.0, 4.0, 5.0, 6.0), w_instance: float = 1.0,
                 w_batch: float = 1.0, w_class: float = 1.0, weight: float = 1.0, logit_stand: bool = False) -> None:
        super().__init__()
        temperatures = tuple(float(T) for T in temperatures)
        if not temperatures or any(T <= 0 for T in temperatures):
            raise ValueError(f"temperatures must be a non-empty list of positive numbers, got {temperatures}")
        self.temperatures = temperatures
        self.w_instance, self.w_batch, self.w_class = w_instance, w_batch, w_class
        self.weight, self.logit_stand = weight, logit_stand

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert teacher is not None
        s, t, _ = flatten_tokens(student, teacher)
        assert t is not None
        if s.shape[0] == 0:
            return {}
        out: dict[str, Tensor] = {}
        w, temps = self.weight, self.temperatures
        if self.w_instance:
            si, ti = (standardize(s), standardize(t)) if self.logit_stand else (s, t)
            out["mlkd_instance"] = w * self.w_instance * _summed(instance_level, si, ti, temps)
        if self.w_batch:
            out["mlkd_batch"] = w * self.w_batch * _summed(batch_level, s, t, temps)
        if self.w_class:
            out["mlkd_class"] = w * self.w_class * _summed(class_level, s, t, temps)
        return out
