"""Offline teacher logits for token models: top-k log-probabilities per token in a memory-mapped store.

The store (:mod:`kdlab.store.format`, one row per sequence of a :class:`kdlab.data.text.TokenSplit`)
holds, per position, the teacher's ``k`` largest log-probabilities (``topk_values`` ``[L, k]``,
float16 by default), their token ids (``topk_indices`` ``[L, k]``, int16 when the vocabulary fits)
and the log of the remaining mass (``topk_tail`` ``[L, 1]``, float32), all computed in float32 from
the full logits: ``bytes_per_token`` = k·(2 + 2) + 4 at float16/int16. :class:`TokenCacheTeacher`
rebuilds ``[B, L, V]`` logits whose softmax gives the k tokens their exact teacher probabilities
and spreads the tail mass uniformly over the other ``V − k`` (as :func:`kdlab.teachers.cached.topk_logits`
does for classes), so training never runs the teacher.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdlab.core import Batch, Outputs, Teacher
from kdlab.data import Loader
from kdlab.errors import CheckpointError
from kdlab.store.format import ArraySpec, Store, StoreWriter
from kdlab.teachers.cache_build import topk_encode
from kdlab.teachers.cached import topk_logits

KIND = "token-topk"


def bytes_per_token(k: int, vocab: int, dtype: str = "float16") -> int:
    """Bytes the store spends per token position: values + ids + the tail's log-mass."""
    return k * (np.dtype(dtype).itemsize + (2 if vocab < 2**15 else 4)) + 4


@torch.no_grad()
def build_token_cache(teacher: Teacher, split: Any, out: str | Path, k: int, *, vocab: int, dtype: str = "float16",
                      batch_size: int = 32, info: dict[str, Any] | None = None) -> Path:
    """Run ``teacher`` once over every sequence of ``split`` and store its top-``k`` per token."""
    if not 1 <= k <= vocab:
        raise ValueError(f"k must be in 1..{vocab}, got {k}")
    L = int(split.x.shape[1])
    specs = [ArraySpec("topk_values", (L, k), dtype),
             ArraySpec("topk_indices", (L, k), "int16" if vocab < 2**15 else "int32"),
             ArraySpec("topk_tail", (L, 1), "float32")]
    meta = {"kind": KIND, "k": k, "vocab": vocab, "seq_len": L, "dtype": dtype,
            "bytes_per_token": bytes_per_token(k, vocab, dtype), **(info or {})}
    with StoreWriter(out, len(split), 1, specs, meta) as w:
        for b in Loader(split, batch_size):
            z = teacher(b).logits
            B = z.shape[0]
            vals, idx, tail = topk_encode(z.reshape(B * L, -1), k)
            assert b.index is not None
            w.write(b.index.numpy(), np.zeros(B, dtype=np.int64),
                    {"topk_values": vals.reshape(B, L, k).numpy(), "topk_indices": idx.reshape(B, L, k).numpy(),
                     "topk_tail": tail.reshape(B, L, 1).numpy()})
        return w.commit()


class TokenCacheTeacher:
    """A Teacher that answers ``[B, L, V]`` logits from a token top-k store by ``batch.index``."""

    def __init__(self, path: str | Path, *, verify: bool = True) -> None:
        self.store = Store(path, verify=verify)
        m = self.store.manifest.get("info", self.store.manifest)
        if m.get("kind") != KIND:
            raise CheckpointError(f"{path} is not a token top-k cache (kind {m.get('kind')!r})")
        self.k, self.vocab, self.seq_len = int(m["k"]), int(m["vocab"]), int(m["seq_len"])
        self.bytes_per_token = int(m["bytes_per_token"])

    def __call__(self, batch: Batch) -> Outputs:
        if batch.index is None:
            raise CheckpointError("a cached teacher needs Batch.index to find its answers")
        idx = batch.index.cpu().numpy()
        arr = self.store.read(idx, np.zeros_like(idx))
        B = len(idx)
        L, k = self.seq_len, self.k
        logits = topk_logits(torch.from_numpy(np.asarray(arr["topk_values"])).reshape(B * L, k),
                             torch.from_numpy(np.asarray(arr["topk_indices"]).astype(np.int64)).reshape(B * L, k),
                             torch.from_numpy(np.asarray(arr["topk_tail"])).reshape(B * L, 1), self.vocab)
        x = batch.inputs
        mask = x.get("loss_mask") if isinstance(x, dict) else None
        return Outputs(logits.reshape(B, L, self.vocab), {}, mask)

    def close(self) -> None:
        self.store.close()
