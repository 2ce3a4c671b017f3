"""The one schedule type: how long and how a trainable is optimised (the ``train:`` config section)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from kdlab.spec import Spec


class Schedule(Spec):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)  # the global batch (split across torchrun processes)
    optimizer: Literal["sgd", "adamw", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    lr_schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: list[int] = []  # epochs, for "step"
    gamma: float = Field(0.1, gt=0)
    grad_clip: float | None = Field(None, gt=0)
    eval_batch_size: int = Field(512, ge=1)
    # NHWC weights for image models while training: 1.1-1.9x faster steps on CPU, less precise
    # BatchNorm gradients (benchmarks/cpu_options.md)
    channels_last: bool = False
    # "bf16": bf16 autocast of the forward passes (student and live teacher); the method losses still see
    # float32 outputs. A 1.56x faster resnet20 step on a CPU with AVX512-BF16 (benchmarks/cpu_options.md);
    # weights, optimiser and evaluation stay float32.
    precision: Literal["fp32", "bf16"] = "fp32"

    def exact_with_epochs(self) -> bool:
        """Whether the learning rate of every epoch so far stays the same when only ``epochs``
        changes (a cosine schedule spans all epochs; step and constant ones do not depend on them)."""
        return self.lr_schedule != "cosine"
