"""DeepInversion: Dreaming to Distill (Yin et al., CVPR 2020), with a memory bank of inverted samples."""
from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.models.contract import as_outputs
from kdlab.synth import GradTeacher, Synthesizer, register_synth


def bn_stat_loss(x: Tensor, running_mean: Tensor, running_var: Tensor) -> Tensor:
    """``‖μ(x) − μ_BN‖₂ + ‖σ²(x) − σ²_BN‖₂`` for one BatchNorm's input ``x`` ``[B, C, ...]``: per-channel
    batch mean and biased variance over every axis but the channel one, against the layer's
    running statistics ``[C]`` (Yin et al., eq. 4)."""
    dims = [0] + list(range(2, x.dim()))
    mean = x.mean(dims)
    var = x.var(dims, unbiased=False)
    return torch.norm(running_mean - mean, 2) + torch.norm(running_var - var, 2)


def tv_losses(x: Tensor) -> tuple[Tensor, Tensor]:
    """Total variation of images ``[B, C, H, W]`` over the four neighbour directions (right, down and
    both diagonals): (l1 = Σ_d mean|Δ_d x|, l2 = Σ_d ‖Δ_d x‖₂ over the whole batch), as the reference."""
    diffs = (x[:, :, :, :-1] - x[:, :, :, 1:], x[:, :, :-1, :] - x[:, :, 1:, :],
             x[:, :, 1:, :-1] - x[:, :, :-1, 1:], x[:, :, :-1, :-1] - x[:, :, 1:, 1:])
    l1 = sum(d.abs().mean() for d in diffs)
    l2 = sum(torch.norm(d) for d in diffs)
    return l1, l2  # type: ignore[return-value]


def l2_prior(x: Tensor) -> Tensor:
    """Mean over the batch of each sample's l2 norm ``‖x_b‖₂``. ``[B, ...]``."""
    return x.flatten(1).norm(dim=1).mean()


def competition_loss(student_logits: Tensor, teacher_logits: Tensor, T: float = 3.0) -> Tensor:
    """Adaptive DeepInversion: ``1 − clamp(JS(P_s, P_t), 0, 1)`` with ``P = softmax(logits / T)``
    clamped to [0.01, 0.99] and JS = ½KL(P_s‖M) + ½KL(P_t‖M) (batch mean), ``M = ½(P_s + P_t)``.
    Minimising it seeks inputs where student and teacher disagree. ``[B, C]`` logits."""
    p, q = F.softmax(student_logits / T, 1), F.softmax(teacher_logits / T, 1)
    m = (0.5 * (p + q)).clamp(0.01, 0.99)
    p, q = p.clamp(0.01, 0.99), q.clamp(0.01, 0.99)
    js = 0.5 * (p * (p.log() - m.log())).sum(1).mean() + 0.5 * (q * (q.log() - m.log())).sum(1).mean()
    return 1.0 - js.clamp(0.0, 1.0)


class _StatHook:
    """Keeps the BN-statistics loss of the layer's latest input (a forward hook that only reads)."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        self.bn, self.loss, self.active = bn, torch.zeros(()), False
        self.handle = bn.register_forward_hook(self)

    def __call__(self, module: nn.Module, inputs: tuple[Tensor, ...], _out: Tensor) -> None:
        if not self.active:  # the student's KD steps also run the teacher: no statistics wanted there
            return
        assert self.bn.running_mean is not None and self.bn.running_var is not None
        self.loss = bn_stat_loss(inputs[0], self.bn.running_mean, self.bn.running_var)


@register_synth("deepinv")
class DeepInversion(Synthesizer):
    """Dreaming to Distill: Data-free Knowledge Transfer via DeepInversion (Yin et al., CVPR 2020).

    Every ``synth_every`` student steps a batch of inputs is optimised from noise for ``iterations``
    Adam steps (betas 0.5, 0.9 as the reference) to minimise

        oh·CE(t(x), y) + bn·Σ_l w_l·L_BN,l + tv_l1·TV₁ + tv_l2·TV₂ + l2·‖x‖ + competition·L_comp

    with balanced random class targets ``y``, the first BN layer weighted ``first_bn`` times the
    others, random shifts of up to ``jitter`` pixels, and Adaptive DeepInversion's competition term
    (0 = off; it reads the student in eval mode). Inputs are kept within the valid pixel range
    (``bounds``, given by the scheme from the data's normalisation). The inverted batches go into a
    memory bank of ``bank_size`` samples (oldest replaced first, as CMI/Fast-DFKD keep theirs); every
    student batch is drawn from the bank, so one inversion serves many student steps. Prior weights
    follow the reference's ImageNet settings (tv_l2 1e-4, l2 1e-5, first BN ×10); iterations and the
    bank are sized for CPU runs.
    """

    needs_bn = True

    def __init__(self, batch_size: int = 128, iterations: int = 200, lr: float = 0.1, oh: float = 1.0,
                 bn: float = 1.0, first_bn: float = 10.0, tv_l1: float = 0.0, tv_l2: float = 1e-4, l2: float = 1e-5,
                 competition: float = 0.0, competition_T: float = 3.0, jitter: int = 1, synth_every: int = 10,
                 bank_size: int = 4096) -> None:
        if iterations < 1 or synth_every < 1 or bank_size < batch_size or batch_size < 2:
            raise ValueError("need iterations >= 1, synth_every >= 1, batch_size >= 2 and bank_size >= batch_size")
        self.batch_size, self.iterations, self.lr, self.oh, self.bn, self.first_bn = (
            batch_size, iterations, lr, oh, bn, first_bn)
        self.tv_l1, self.tv_l2, self.l2 = tv_l1, tv_l2, l2
        self.competition, self.competition_T = competition, competition_T
        self.jitter, self.synth_every, self.bank_size = jitter, synth_every, bank_size
        self.count, self.filled, self.ptr = 0, 0, 0
        self.bounds: tuple[Tensor, Tensor] | None = None
        self.last: dict[str, float] = {}

    def bind(self, teacher: GradTeacher, student: nn.Module, input_shape: tuple[int, ...], num_classes: int) -> None:
        self.teacher, self.student, self.shape, self.num_classes = teacher, student, tuple(input_shape), num_classes
        self.hooks = [_StatHook(b) for b in teacher.batchnorms()]
        self.bank = torch.zeros(self.bank_size, *self.shape)
        self.bank_y = torch.zeros(self.bank_size, dtype=torch.long)

    def set_bounds(self, lo: Tensor, hi: Tensor) -> None:
        """Per-channel valid range ``[C]`` of normalised inputs (pixels 0 and 1)."""
        self.bounds = (lo.view(1, -1, *([1] * (len(self.shape) - 1))), hi.view(1, -1, *([1] * (len(self.shape) - 1))))

    def targets(self, n: int) -> Tensor:
        """Balanced class targets in a random order."""
        return (torch.arange(n) % self.num_classes)[torch.randperm(n)]

    def objective(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """The weighted terms of the inversion objective on inputs ``x`` for targets ``y``."""
        for h in self.hooks:
            h.active = True
        try:
            out = self.teacher(x)
        finally:
            for h in self.hooks:
                h.active = False
        w = [self.first_bn] + [1.0] * (len(self.hooks) - 1)
        bn = cast(Tensor, sum(wi * h.loss for wi, h in zip(w, self.hooks)))
        terms: dict[str, Tensor] = {"oh": self.oh * F.cross_entropy(out.logits, y), "bn": self.bn * bn}
        if x.dim() == 4 and (self.tv_l1 or self.tv_l2):
            l1, l2 = tv_losses(x)
            terms["tv"] = self.tv_l1 * l1 + self.tv_l2 * l2
        if self.l2:
            terms["l2"] = self.l2 * l2_prior(x)
        if self.competition:
            was = self.student.training
            self.student.eval()
            s = as_outputs(self.student(x)).logits
            self.student.train(was)
            terms["comp"] = self.competition * competition_loss(s, out.logits, self.competition_T)
        return terms

    def invert(self) -> tuple[Tensor, Tensor]:
        """One batch inverted from noise: (inputs ``[B, *shape]``, targets ``[B]``)."""
        y = self.targets(self.batch_size)
        x = torch.randn(self.batch_size, *self.shape, requires_grad=True)
        opt = torch.optim.Adam([x], lr=self.lr, betas=(0.5, 0.9), eps=1e-8)
        terms: dict[str, Tensor] = {}
        for _ in range(self.iterations):
            xj = x
            if self.jitter and x.dim() == 4:
                dx, dy = (int(v) for v in torch.randint(-self.jitter, self.jitter + 1, (2,)))
                xj = torch.roll(x, shifts=(dx, dy), dims=(2, 3))
            terms = self.objective(xj, y)
            (g,) = torch.autograd.grad(sum(terms.values()), [x])  # type: ignore[arg-type]
            x.grad = g
            opt.step()
            if self.bounds is not None:
                with torch.no_grad():
                    x.copy_(torch.maximum(torch.minimum(x, self.bounds[1]), self.bounds[0]))
        self.last = {f"synth_{k}": float(v.detach()) for k, v in terms.items()}
        return x.detach(), y

    def step(self) -> Tensor:
        if self.count % self.synth_every == 0:
            x, y = self.invert()
            n = len(x)
            idx = (self.ptr + torch.arange(n)) % self.bank_size
            self.bank[idx], self.bank_y[idx] = x, y
            self.ptr, self.filled = int((self.ptr + n) % self.bank_size), min(self.bank_size, self.filled + n)
        self.count += 1
        return self.bank[torch.randint(self.filled, (self.batch_size,))].clone()

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        if self.filled == 0:  # before any inversion: the noise inversions start from
            return torch.randn(n, *self.shape, generator=generator)
        return self.bank[torch.randint(self.filled, (n,), generator=generator)].clone()

    def state_dict(self) -> dict[str, Any]:
        return {"bank": self.bank[: self.filled].clone(), "bank_y": self.bank_y[: self.filled].clone(),
                "ptr": self.ptr, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n = len(state["bank"])
        self.bank.zero_()
        self.bank[:n], self.bank_y[:n] = state["bank"], state["bank_y"]
        self.filled, self.ptr, self.count = n, int(state["ptr"]), int(state["count"])
