"""Synthesizers: where a data-free run's training inputs come from (one module each).

A :class:`Synthesizer` builds inputs against a frozen teacher that it can differentiate through
(:class:`GradTeacher`), never against real data. Two families:

* generator-based (:mod:`~kdlab.synth.dafl`, :mod:`~kdlab.synth.dfad`, :mod:`~kdlab.synth.zskt`):
  a generator ``z ~ N(0, I) → x`` trained with its own optimiser;
* inversion-based (:mod:`~kdlab.synth.deepinv`): inputs optimised directly, kept in a memory bank.

The data-free scheme wraps a synthesizer in a :class:`SynthLoader`, the data source of the one
training loop: each step it lets the synthesizer update itself (:meth:`Synthesizer.step`) and yields
a :class:`~kdlab.core.Batch` of the (detached) synthetic inputs, with ``targets=None``. The student's
own step stays the loop's ordinary Distiller step (see docs/data_free.md for why this design).

    @register_synth("dafl")
    class DAFL(Synthesizer): ...

    create_synth("dafl", batch_size=256)
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, ClassVar, Iterator

import torch
from torch import Tensor, nn

from kdlab.core import Batch, Outputs, Teacher
from kdlab.errors import ConfigError, IncompatibleError
from kdlab.models.contract import as_outputs
from kdlab.registry import Registry, import_submodules


class GradTeacher:
    """A frozen teacher that passes gradients to its inputs (weights never change).

    ``module`` stays in eval mode with ``requires_grad=False`` on every parameter, so a synthesizer's
    backward reaches the inputs (or a generator) and never the teacher's weights or BN statistics.
    ``transform`` maps the student's normalised inputs to the teacher's (a checkpoint's renormalisation).
    """

    def __init__(self, module: nn.Module, transform: Any = None, name: str = "teacher") -> None:
        self.module, self.transform, self.name = module.eval(), transform, name
        for p in self.module.parameters():
            p.requires_grad_(False)

    def __call__(self, x: Tensor) -> Outputs:
        """``x``: ``[B, *input_shape]`` → Outputs with a graph back to ``x``."""
        return as_outputs(self.module(x if self.transform is None else self.transform(x)))

    def batchnorms(self) -> list[nn.modules.batchnorm._BatchNorm]:
        return [m for m in self.module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                and m.running_mean is not None and m.running_var is not None]


def grad_teacher(teacher: Teacher, *, needs_bn: bool, synth: str) -> GradTeacher:
    """The differentiable view of ``teacher``, or a one-line IncompatibleError saying why there is none.

    Every synthesizer back-propagates through the teacher, so a teacher known only by its outputs
    (ONNX, a file of outputs, a cache, any black-box callable) is refused; so is a TorchScript
    program whose outputs carry no gradient. ``needs_bn``: the synthesizer matches BatchNorm
    statistics (DeepInversion), which needs an eager module with BatchNorm layers.
    """
    inner: Any = teacher
    while not hasattr(inner, "module") and hasattr(inner, "teacher"):  # an accelerated wrapper
        inner = inner.teacher
    module = getattr(inner, "module", None)
    kind = type(teacher).__name__
    if not isinstance(module, nn.Module) or type(inner).__name__ != "FrozenTeacher":
        what = {"OnnxTeacher": "an ONNX model", "FileTeacher": "a file of outputs",
                "CachedTeacher": "a cache of outputs"}
        raise IncompatibleError(f"--synth {synth} needs gradients through the teacher, but the teacher is "
                                f"{what.get(kind, 'a black box (' + kind + ')')} that only gives outputs; give a kdlab "
                                "checkpoint or a PyTorch module")
    gt = GradTeacher(module, getattr(inner, "input_transform", None), kind)
    scripted = isinstance(module, torch.jit.ScriptModule)
    if scripted and not _has_input_grad(gt):
        raise IncompatibleError(f"--synth {synth} needs gradients through the teacher, but this TorchScript "
                                "teacher's outputs carry none (it runs without autograd); give a kdlab checkpoint "
                                "or an eager module")
    if needs_bn:
        if scripted:
            raise IncompatibleError(f"--synth {synth} reads the teacher's BatchNorm statistics with hooks, which "
                                    "a TorchScript program does not take; give a kdlab checkpoint, or "
                                    "--synth dafl|dfad|zskt")
        if not gt.batchnorms():
            raise IncompatibleError(f"--synth {synth} matches the teacher's BatchNorm statistics, but the teacher "
                                    f"({type(module).__name__}) has no BatchNorm layers with running statistics; use "
                                    "--synth dafl|dfad|zskt")
    return gt


def _has_input_grad(t: GradTeacher) -> bool:
    shape = getattr(t.module, "kdlab_input_shape", None)
    for s in ([tuple(shape)] if shape else []) + [(1, 8, 8), (1, 28, 28), (3, 32, 32), (64,)]:
        x = torch.zeros(2, *s, requires_grad=True)
        try:
            with torch.enable_grad():
                out = t(x).logits
        except Exception:
            continue
        return bool(out.requires_grad)
    return False


class Synthesizer:
    """The interface every synthesizer implements.

    ``bind`` is called once before training with the differentiable teacher, the student being
    trained (the adversarial ones and DeepInversion's competition read it; they never step it) and
    the data's description. ``step`` does the synthesizer's own work for one student step (train its
    generator, invert a batch, ...) and returns ``[B, *input_shape]`` detached inputs for the student;
    ``sample`` draws ``n`` inputs with no training (report figures, the loop's shape probe);
    ``state_dict``/``load_state_dict`` carry everything a resumed run needs (generator, optimiser,
    memory bank, counters), so a resume is exact.
    """

    needs_bn: ClassVar[bool] = False
    # the student's objective in the synthesizer's paper (the run's default; --method replaces it)
    student_method: ClassVar[dict[str, Any]] = {"name": "kd", "T": 1.0}
    batch_size: int = 128

    def bind(self, teacher: GradTeacher, student: nn.Module, input_shape: tuple[int, ...], num_classes: int) -> None:
        raise NotImplementedError

    def step(self) -> Tensor:
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def stats(self) -> dict[str, float]:
        """The synthesizer's last loss terms (floats), for the epoch log."""
        return dict(getattr(self, "last", {}))


class SynthLoader:
    """The data source of a data-free run: ``steps`` batches of synthetic inputs per epoch.

    It has the loop's loader interface (``set_epoch``, ``len``, ``iter``). An iteration that no
    ``set_epoch`` announced is the loop's shape probe (``next(iter(loader))`` before training): it
    gets one batch drawn without training and without touching the global RNG, so probing changes
    nothing a run computes.
    """

    def __init__(self, synth: Synthesizer, steps: int) -> None:
        if steps < 1:
            raise ConfigError(f"steps per epoch must be >= 1, got {steps}")
        self.synth, self.steps, self.epoch, self._armed = synth, steps, 0, False
        self.on_set_epoch: Callable[[int], None] | None = None  # e.g. a clock of the epoch's CPU time

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._armed = epoch, True
        if self.on_set_epoch is not None:
            self.on_set_epoch(epoch)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Batch]:
        if not self._armed:
            yield Batch(self.synth.sample(self.synth.batch_size, torch.Generator().manual_seed(0)))
            return
        self._armed = False
        for _ in range(self.steps):
            yield Batch(self.synth.step())


SYNTHS: Registry[type[Synthesizer]] = Registry("synthesizer")
register_synth = SYNTHS.register


def create_synth(name: str, **kwargs: Any) -> Synthesizer:
    """A synthesizer by name with its typed hyperparameters (unknown ones are a ConfigError)."""
    cls = SYNTHS.get(name)
    params = inspect.signature(cls.__init__).parameters
    bad = [k for k in kwargs if k not in params]
    if bad:
        valid = ", ".join(p for p in params if p != "self")
        raise ConfigError(f"synthesizer {name!r} has no hyperparameter {bad[0]!r} (valid: {valid})")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"synthesizer {name!r}: {e}") from None


def list_synths() -> list[str]:
    return SYNTHS.names()


def latent(n: int, dim: int, generator: torch.Generator | None = None, device: Any = None) -> Tensor:
    """``[n, dim]`` standard normal latent codes."""
    return torch.randn(n, dim, generator=generator, device=device)


def module_state(m: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


import_submodules(__name__, __path__)
