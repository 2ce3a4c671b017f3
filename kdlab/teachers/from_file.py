"""A black-box teacher given only as a file of per-sample outputs (an API, or a model we cannot run).

Formats:

* ``.npy``: logits ``[N, C]``; row i answers for sample id i (``Batch.index``).
* ``.npz``: ``logits`` ``[M, C]``, optionally ``index`` ``[M]`` (the sample id of each row; default
  ``0..M−1``) and ``targets`` ``[M]`` (the labels the rows were computed for, used by
  :meth:`FileTeacher.check` to catch a file made for a different split, seed or subset).

Sample ids are those of the training split the student trains on (``Batch.index``, dense from 0
for splits made by :func:`kdlab.data.load_data` with the same seed and subset). The file answers
for the un-augmented sample, whatever augmentation view the student sees.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from kdlab.core import Batch, Outputs, Teacher
from kdlab.errors import CheckpointError, IncompatibleError


class FileTeacher:
    """Teacher answering ``Batch.index`` lookups from a ``.npy``/``.npz`` file of logits.

    It answers for the ids of the split the file was made for (the training split) only, so it
    cannot be evaluated on validation or test data: ``train_split_only`` says so.
    """

    train_split_only = True

    def __init__(self, path: str | Path) -> None:
        p = Path(path)
        if not p.is_file():
            raise CheckpointError(f"teacher outputs file {p} not found")
        try:
            if p.suffix == ".npz":
                with np.load(p, allow_pickle=False) as z:
                    if "logits" not in z:
                        raise CheckpointError(f"{p}: no 'logits' array (has {sorted(z.files)})")
                    logits = z["logits"]
                    index = z["index"] if "index" in z else None
                    targets = z["targets"] if "targets" in z else None
            elif p.suffix == ".npy":
                logits, index, targets = np.load(p, allow_pickle=False), None, None
            else:
                raise CheckpointError(f"{p}: teacher outputs must be a .npy or .npz file")
        except (ValueError, OSError, EOFError) as e:
            raise CheckpointError(f"cannot read teacher outputs {p}: {e}") from None
        if logits.ndim != 2 or not np.issubdtype(logits.dtype, np.floating):
            raise CheckpointError(f"{p}: logits must be a float array [N, C], got {logits.dtype} {logits.shape}")
        if not np.isfinite(logits).all():
            raise CheckpointError(f"{p}: logits contain NaN or inf")
        ids = np.arange(len(logits)) if index is None else np.asarray(index).astype(np.int64).reshape(-1)
        if len(ids) != len(logits):
            raise CheckpointError(f"{p}: {len(ids)} ids for {len(logits)} rows of logits")
        if len(ids) and (ids.min() < 0 or len(np.unique(ids)) != len(ids)):
            raise CheckpointError(f"{p}: sample ids must be distinct and >= 0")
        self.path = p
        self.logits = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
        self.ids = torch.from_numpy(ids)
        self.row = torch.full((int(ids.max()) + 1 if len(ids) else 0,), -1, dtype=torch.long)
        self.row[self.ids] = torch.arange(len(ids))
        self.targets = None if targets is None else torch.from_numpy(np.asarray(targets).astype(np.int64).reshape(-1))

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[1])

    def rows_for(self, index: Tensor) -> Tensor:
        idx = index.detach().cpu().long()
        ok = (idx >= 0) & (idx < len(self.row))
        rows = torch.full_like(idx, -1)
        rows[ok] = self.row[idx[ok]]
        if bool((rows < 0).any()):
            missing = idx[rows < 0][:5].tolist()
            raise CheckpointError(f"{self.path} has no outputs for sample id(s) {missing}")
        return rows

    def __call__(self, batch: Batch) -> Outputs:
        if batch.index is None:
            raise IncompatibleError("a teacher read from a file needs Batch.index (sample ids)")
        dev = batch.index.device
        return Outputs(self.logits[self.rows_for(batch.index)].to(dev))

    def check(self, targets: Tensor, index: Tensor | None = None) -> None:
        """Raise IncompatibleError unless the file covers every sample id of a split whose labels
        are ``targets`` (ids ``index``, default ``0..N−1``) and, when the file stores labels, they agree."""
        ids = torch.arange(len(targets)) if index is None else index
        rows = self.rows_for(ids)
        if self.targets is not None:
            bad = int((self.targets[rows] != targets.cpu()).sum())
            if bad:
                raise IncompatibleError(
                    f"{self.path} does not line up with this data: labels differ for {bad} of {len(ids)} samples "
                    f"(made with another seed, subset or dataset?)")

    def to(self, device: Any) -> "FileTeacher":
        return self  # rows are gathered on CPU and moved with each batch

    def __repr__(self) -> str:
        return f"FileTeacher({str(self.path)!r}, {len(self.ids)} samples, {self.num_classes} classes)"


@torch.no_grad()
def save_outputs(teacher: Teacher, split: Any, path: str | Path, batch_size: int = 512) -> Path:
    """Write ``teacher``'s logits over every sample of ``split`` (a :class:`kdlab.data.Split`) to a
    ``.npz`` with ``logits``, ``index`` and (when the split is labeled) ``targets``."""
    from kdlab.data import Loader

    p = Path(path)
    if p.suffix != ".npz":
        p = p.with_suffix(p.suffix + ".npz") if p.suffix else p.with_suffix(".npz")
    logits, index = [], []
    for b in Loader(split, batch_size):
        logits.append(teacher(b).logits.float().cpu())
        index.append(b.index.cpu())  # type: ignore[union-attr]
    logits_np, index_np = torch.cat(logits).numpy(), torch.cat(index).numpy()
    p.parent.mkdir(parents=True, exist_ok=True)
    if split.y is not None:
        np.savez(p, logits=logits_np, index=index_np, targets=split.y.numpy())
    else:
        np.savez(p, logits=logits_np, index=index_np)
    return p
