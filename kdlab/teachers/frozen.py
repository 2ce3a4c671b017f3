"""A frozen nn.Module teacher."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from kdlab.core import Batch, Inputs, Outputs
from kdlab.models.contract import as_outputs


class FrozenTeacher:
    """Wraps a trained module: eval mode, no autograd graph, parameters frozen.

    Deliberately *not* an nn.Module: its weights are never part of the trainable module, the
    optimiser, DDP or the student's checkpoint.

    input_transform: maps the student's (normalised) inputs to what the teacher expects, e.g. a
    different normalisation or resolution (see :func:`renormalize`).
    """

    def __init__(self, module: nn.Module, input_transform: Callable[[Inputs], Inputs] | None = None) -> None:
        self.module = module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.input_transform = input_transform

    def __call__(self, batch: Batch) -> Outputs:
        x = batch.inputs if self.input_transform is None else self.input_transform(batch.inputs)
        # no_grad rather than inference_mode: outputs feed the student's loss, and inference
        # tensors cannot be saved for backward.
        with torch.no_grad():
            return as_outputs(self.module(x))

    def to(self, device: torch.device | str) -> "FrozenTeacher":
        self.module.to(device)
        return self


def renormalize(src_mean: Tensor, src_std: Tensor, dst_mean: Tensor, dst_std: Tensor) -> Callable[[Tensor], Tensor]:
    """Input transform from one per-channel normalisation to another (``[B, C, H, W]``)."""
    scale = (src_std / dst_std).view(1, -1, 1, 1)
    shift = ((src_mean - dst_mean) / dst_std).view(1, -1, 1, 1)
    return lambda x: x * scale.to(x.device) + shift.to(x.device)
