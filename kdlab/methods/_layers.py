"""Token-sequence helpers for the transformer methods (not a method): layer maps and masked means.

Text encoders return ``hidden0`` (the embedding output) .. ``hiddenN`` (layer N's output), each
``[B, L, D]``, for the same ``Batch.inputs`` on both sides; the padding mask is the batch's
``attention_mask`` ``[B, L]``.
"""
from __future__ import annotations

from torch import Tensor

from kdlab.core import Batch, Outputs
from kdlab.errors import ConfigError, IncompatibleError

LAYER_MAPS = ("uniform", "skip", "last")


def layer_map(n_student: int, n_teacher: int, strategy: str = "uniform") -> list[tuple[int, int]]:
    """(student layer, teacher layer) pairs, 1-based layers (0 = embeddings), for ``M = n_student``
    student and ``N = n_teacher`` teacher layers:

    * ``uniform`` (TinyBERT): 0 → 0 and m → m·N/M for m = 1..M (the last layers always meet);
    * ``skip`` (PKD-Skip): m → m·N/M for m = 1..M−1 (every (N/M)-th teacher layer; the output layer
      is left to the logit loss, as in PKD);
    * ``last`` (PKD-Last): m → N−M+m for m = 1..M−1 (the teacher's last layers before the output).
    """
    if strategy not in LAYER_MAPS:
        raise ConfigError(f"layer map {strategy!r} is not one of {', '.join(LAYER_MAPS)}")
    if n_student < 1 or n_teacher < n_student:
        raise IncompatibleError(f"a layer map needs 1 <= student layers ({n_student}) <= teacher layers ({n_teacher})")
    M, N = n_student, n_teacher
    if strategy == "uniform":
        return [(0, 0), *((m, m * N // M) for m in range(1, M + 1))]
    if strategy == "skip":
        return [(m, m * N // M) for m in range(1, M)]
    return [(m, N - M + m) for m in range(1, M)]


def hidden_layers(out: Outputs, side: str, method: str) -> int:
    """How many layers (``hidden1..hiddenN``) ``out`` has; an IncompatibleError without ``hidden0``."""
    n = 0
    while f"hidden{n + 1}" in out.features:
        n += 1
    if "hidden0" not in out.features:
        raise IncompatibleError(f"{method} needs the hidden states hidden0..hiddenN of a transformer encoder, but the "
                                f"{side} has features {sorted(out.features)}")
    return n


def attention_mask(batch: Batch, like: Tensor) -> Tensor:
    """The batch's attention mask ``[B, L]`` as a float 0/1 tensor (all ones for tensor inputs)."""
    x = batch.inputs
    if isinstance(x, dict) and "attention_mask" in x:
        return x["attention_mask"].to(like.device, like.dtype)
    return like.new_ones(like.shape[:2])


def masked_mse(s: Tensor, t: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the real tokens only: ``s``, ``t`` ``[B, L, D]``, ``mask`` ``[B, L]`` (1 = real).
    Σ_{b,l,d} mask·(s − t)² / (D · Σ mask); a padding position contributes nothing."""
    m = mask.to(s.dtype).unsqueeze(-1)
    return ((s - t.to(s.dtype)) ** 2 * m).sum() / (m.sum().clamp_min(1.0) * s.shape[-1])
