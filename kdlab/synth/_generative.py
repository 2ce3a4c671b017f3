"""Shared plumbing of the generator-based synthesizers (not a synthesizer): a generator, its Adam
optimiser, sampling that leaves no trace, and the exact state a resume needs."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from kdlab.synth import GradTeacher, Synthesizer, latent, module_state
from kdlab.synth._generator import Generator


class GeneratorSynth(Synthesizer):
    """A synthesizer whose inputs are ``G(z)``, ``z ~ N(0, I)``; subclasses define :meth:`step`."""

    def __init__(self, batch_size: int, nz: int, ngf: int, lr: float, betas: tuple[float, float]) -> None:
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (the generator's BatchNorm needs a batch), got {batch_size}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.batch_size, self.nz, self.ngf, self.lr, self.betas = batch_size, nz, ngf, lr, tuple(betas)
        self.count = 0  # synthesizer steps done (one per student step)
        self.last: dict[str, float] = {}

    def bind(self, teacher: GradTeacher, student: nn.Module, input_shape: tuple[int, ...], num_classes: int) -> None:
        self.teacher, self.student, self.num_classes = teacher, student, num_classes
        self.generator = Generator(input_shape, self.nz, self.ngf)  # initialised from the run's seeded RNG
        self.opt = torch.optim.Adam(self.generator.parameters(), lr=self.lr, betas=self.betas)  # type: ignore[arg-type]

    def z(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return latent(n, self.nz, generator)

    def update(self, loss: Tensor) -> None:
        """One optimiser step of the generator on ``loss``; gradients reach the generator only
        (``autograd.grad``), so the teacher's and the student's ``.grad`` stay untouched."""
        params = [p for p in self.generator.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params)
        for p, g in zip(params, grads):
            p.grad = g
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def draw(self) -> Tensor:
        """A batch for the student: the generator in training mode (batch statistics), as it trains."""
        self.generator.train()
        return self.generator(self.z(self.batch_size)).detach()

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` inputs as the student sees them (batch statistics) with the generator's running BN
        statistics restored afterwards and no global RNG drawn when ``generator`` is given."""
        buffers = {k: v.clone() for k, v in self.generator.named_buffers()}
        self.generator.train()
        x = self.generator(self.z(max(n, 2), generator))[:n]
        for k, v in self.generator.named_buffers():
            v.copy_(buffers[k])
        return x.detach()

    def state_dict(self) -> dict[str, Any]:
        return {"generator": module_state(self.generator), "optimizer": self.opt.state_dict(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.opt.load_state_dict(state["optimizer"])
        self.count = int(state["count"])
