"""A teacher read from a precomputed store (:mod:`kdlab.teachers.cache_build` fills the store).

The teacher's cost is paid once per cache, then every run that reads the cache (the methods and
seeds of a sweep, trials of a search) trains at the cost of plain training::

    build_cache(FrozenTeacher(t), data, "runs/cache", views=4)      # teacher runs once per (index, view)
    teacher = CachedTeacher("runs/cache")
    loader = cache_loader(data, teacher, batch_size=128, seed=run_seed)
    fit(Distiller(student, teacher, methods), data, schedule, loader=loader)

**Augmentation.** Outputs are stored per ``(sample index, augmentation view)``. The cache is built
with the same :class:`~kdlab.data.Loader` code path the student trains with (``gather`` then
``augment(x, index, view, seed)``), and :func:`cache_loader` makes the student's loader cycle
through exactly the cached views (``view = epoch % views``) with the cache's augmentation seed, so
the student's input for ``(index, view)`` is bit-identical to the teacher's. Shuffling still
follows the run's seed, so runs with different seeds share one cache.

**Top-k.** A top-k store keeps, per row, the k largest log-probabilities ``log p_i`` (the logits
minus their log-sum-exp), their class ids, and the log of the remaining mass ``log(1 − Σ_topk p_i)``
(computed in fp32 from all logits at build time). :func:`topk_logits` rebuilds ``[B, C]`` logits:
the top-k classes get their log-probabilities and every other class gets
``log((1 − Σ_topk p_i) / (C − k))``, the remaining mass spread uniformly. At T = 1 the softmax of
the rebuilt logits gives the top-k probabilities exactly and the right total tail mass; at T > 1 a
uniform tail is slightly heavier than the true one (the mean of ``p_j^{1/T}`` is at most
``(mean p_j)^{1/T}``). The rebuilt values are log-probabilities, i.e. logits up to a per-row
constant, which no softmax-based loss can see.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from kdlab.core import Batch, Outputs
from kdlab.data import DataSplits, Loader, Split
from kdlab.errors import CheckpointError
from kdlab.store.format import Store


def topk_logits(values: Tensor, indices: Tensor, tail: Tensor, num_classes: int) -> Tensor:
    """Rebuild ``[B, C]`` logits from top-k log-probabilities: the other ``C − k`` classes share the
    remaining mass ``exp(tail)`` uniformly (see the module docstring)."""
    values = values.float()
    B, k = values.shape
    if k >= num_classes:
        out = torch.empty(B, num_classes, dtype=values.dtype, device=values.device)
    else:
        fill = tail.float().reshape(B, 1) - float(np.log(num_classes - k))
        # fp16-stored values can overshoot a vanishing tail; never let the tail beat the k-th class
        fill = torch.minimum(fill, values.min(1, keepdim=True).values)
        out = fill.expand(B, num_classes).clone()
    return out.scatter_(1, indices.long(), values)


# ---------------------------------------------------------------- reading

class CachedTeacher:
    """A Teacher that reads its outputs by ``(batch.index, batch.view)`` from a store.

    path:  a cache directory written by :func:`build_cache` (``kdlab cache build``).
    verify: check the files' SHA-256 against the manifest on open (CheckpointError if corrupt).
    max_resident: bytes of the store's mapped pages the process may keep resident before they are
                  dropped (the page cache keeps them); ``None`` never drops.
    """

    def __init__(self, path: str | Path | Store, *, verify: bool = True, max_resident: int | None = 256 << 20,
                 built: bool = False) -> None:
        self.built = built  # whether it was (re)built just now by ensure_cache
        self.store = path if isinstance(path, Store) else Store(path, verify=verify, max_resident=max_resident)
        m = self.store.manifest
        self.manifest = m
        self.path = self.store.path
        self.kind, self.k = m["kind"], m.get("k")
        self.num_classes = int(m["num_classes"])
        self.features = list(m.get("features") or [])
        self.views = self.store.views
        self.seed = int(m.get("seed", 0))

    def __repr__(self) -> str:
        return (f"CachedTeacher({str(self.path)!r}, {self.store.num_samples} samples x {self.views} views, "
                f"{self.kind}{'' if self.k is None else f' k={self.k}'}, {self.manifest['dtype']})")

    def fingerprint(self) -> str:
        return str(self.manifest["teacher"])

    def __call__(self, batch: Batch) -> Outputs:
        if batch.index is None:
            raise CheckpointError("a cached teacher needs Batch.index (the sample ids) to find its outputs")
        index = batch.index.detach().cpu().numpy()
        view = np.zeros_like(index) if batch.view is None else batch.view.detach().cpu().numpy()
        arr = self.store.read(index, view)
        x = batch.inputs
        device = next(iter(x.values())).device if isinstance(x, dict) else x.device
        if self.kind == "logits":
            logits = torch.from_numpy(arr["logits"]).float()
        else:
            logits = topk_logits(torch.from_numpy(arr["topk_values"]), torch.from_numpy(arr["topk_indices"]),
                                 torch.from_numpy(arr["topk_tail"]), self.num_classes)
        feats = {n: torch.from_numpy(arr[f"feat.{n}"]).float().to(device) for n in self.features}
        return Outputs(logits.to(device), feats)

    def close(self) -> None:
        self.store.close()


class CachedViewLoader(Loader):
    """The student's loader over a cache built with augmentation: view = ``epoch % views`` and the
    augmentation parameters come from ``(view_seed, index, view)``, exactly as when the cache was
    built; the shuffling order follows ``seed`` (the run's seed)."""

    def __init__(self, split: Split, batch_size: int, *, views: int, view_seed: int, seed: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(split, batch_size, seed=view_seed, **kwargs)
        self.views = views
        self.order_seed = seed

    def _order(self) -> Tensor:
        # Loader uses self.seed for both order and augmentation; order by the run's seed here
        view_seed, self.seed = self.seed, self.order_seed
        try:
            return super()._order()
        finally:
            self.seed = view_seed


def cache_loader(data: DataSplits, teacher: CachedTeacher, batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> Loader:
    """The training loader that presents the student exactly the inputs the cached teacher saw
    (the same arguments ``fit`` uses for its default loader otherwise)."""
    drop_last = len(data.train) > batch_size
    if data.augment is None:  # view is always 0
        return Loader(data.train, batch_size, shuffle=True, seed=seed, augment=None, drop_last=drop_last, rank=rank,
                      world_size=world_size)
    return CachedViewLoader(data.train, batch_size, views=teacher.views, view_seed=teacher.seed, seed=seed,
                            shuffle=True, augment=data.augment, drop_last=drop_last, rank=rank, world_size=world_size)
