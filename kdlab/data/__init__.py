"""Dataset registry and the in-memory data pipeline.

A registered source returns :class:`RawData` (train and test arrays as tensors); :func:`load_data`
turns it into seeded train/val/test :class:`Split` objects with per-dataset normalisation, and
:class:`Loader` yields :class:`kdlab.core.Batch` objects. Everything stays in memory and batches are
gathered by index: on CPU this is faster than DataLoader workers for datasets of this size.

    @register_dataset("digits")
    def digits(root: str | None = None) -> RawData: ...
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor

from kdlab.core import Batch, DataInfo
from kdlab.errors import ConfigError, DataError
from kdlab.registry import Registry
from kdlab.data.augment import augment, Augment

DATASETS: Registry[Callable[..., "RawData"]] = Registry("dataset")
register_dataset = DATASETS.register


@dataclass
class RawData:
    """x: ``[N, C, H, W]`` uint8 or float images (or ``[N, D]`` vectors); y: ``[N]`` int64."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor | None
    test_y: Tensor | None
    classes: list[str]
    augment: bool = False  # whether crop/flip augmentation suits this data by default
    pad: int = 4


@dataclass
class Split:
    x: Tensor
    y: Tensor | None
    mean: Tensor
    std: Tensor
    scale: float = 1.0  # 1/255 for uint8 images
    index: Tensor | None = None  # ids in the parent data (defaults to arange)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def gather(self, idx: Tensor) -> Tensor:
        """Float, normalised inputs for rows ``idx``."""
        x = self.x[idx].float()
        if self.scale != 1.0:
            x = x * self.scale
        if x.dim() == 4:
            return (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)
        return (x - self.mean) / self.std


@dataclass
class DataSplits:
    name: str
    train: Split
    val: Split
    test: Split
    classes: list[str]
    augment: Augment | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    @property
    def info(self) -> DataInfo:
        return DataInfo(self.num_classes, len(self.train), self.input_shape)

    def fingerprint(self) -> str:
        """Content hash of the train split (inputs + labels), for cache manifests."""
        import hashlib

        h = hashlib.sha256()
        h.update(self.name.encode())
        h.update(self.train.x.contiguous().numpy().tobytes())
        if self.train.y is not None:
            h.update(self.train.y.contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


class Loader:
    """Yields Batches from a Split.

    Shuffling is seeded by ``(seed, epoch)``; augmentation parameters are a pure function of
    ``(seed, sample index, view)`` where view = epoch, so any view can be replayed exactly
    (a teacher cache keyed by ``(index, view)`` never goes stale).
    """

    def __init__(self, split: Split, batch_size: int, shuffle: bool = False, seed: int = 0,
                 augment: Augment | None = None, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1) -> None:
        if len(split) == 0:
            raise DataError("dataset split is empty")
        self.split, self.batch_size, self.shuffle, self.seed = split, batch_size, shuffle, seed
        self.augment, self.drop_last, self.rank, self.world_size = augment, drop_last, rank, world_size
        self.epoch = 0
        self.views: int | None = None  # when set, view = epoch % views (cached augmentation)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> Tensor:
        n = len(self.split)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        if self.world_size > 1:  # each rank takes every world_size-th sample of the same order
            per = n // self.world_size
            order = order[: per * self.world_size][self.rank :: self.world_size]
        return order

    def __len__(self) -> int:
        n = len(self.split) // self.world_size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order = self._order()
        view_id = self.epoch % self.views if self.views else self.epoch
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            if self.drop_last and len(idx) < self.batch_size:
                break
            x = self.split.gather(idx)
            view = torch.full_like(idx, view_id)
            if self.augment is not None:
                x = augment(x, idx, view, self.seed, self.augment)
            y = None if self.split.y is None else self.split.y[idx]
            ids = idx if self.split.index is None else self.split.index[idx]
            yield Batch(x, y, ids, view if self.augment is not None else torch.zeros_like(idx))


def _stats(x: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    xf = x.float() * scale
    if xf.dim() == 4:
        mean = xf.mean(dim=(0, 2, 3))
        std = xf.std(dim=(0, 2, 3))
    else:
        mean, std = xf.mean(0), xf.std(0)
    return mean, std.clamp_min(1e-6)


def load_data(name: str, root: str | None = None, val_fraction: float = 0.1, seed: int = 0,
              subset: int | None = None, augment: bool | None = None, **kwargs: object) -> DataSplits:
    """Load a registered dataset into seeded train/val/test splits.

    The val split is carved out of the training data with a generator seeded by ``seed``; the
    normalisation statistics come from the remaining train split only. ``subset`` keeps the first
    ``subset`` training samples of a seeded permutation (and at most ``subset`` test samples).
    """
    source = DATASETS.get(name)
    _check_options(name, source, kwargs)
    raw = source(root=root, **kwargs)
    x, y = raw.train_x, raw.train_y
    if x.shape[0] == 0:
        raise DataError(f"dataset {name!r} has no training samples")
    if y.min() < 0 or y.max() >= len(raw.classes):
        raise DataError(f"dataset {name!r}: labels must be in [0, {len(raw.classes) - 1}], "
                        f"found range [{int(y.min())}, {int(y.max())}]")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(x.shape[0], generator=g)
    if subset:
        perm = perm[:subset]
    n_val = int(round(len(perm) * val_fraction))
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    if raw.test_x is None:  # carve a test split too
        n_test = n_val or max(1, len(perm) // 10)
        test_idx, tr_idx = tr_idx[:n_test], tr_idx[n_test:]
        test_x, test_y = x[test_idx], y[test_idx]
    else:
        test_x, test_y = raw.test_x, raw.test_y
        if subset:
            test_x, test_y = test_x[:subset], test_y[:subset]
    if len(tr_idx) < 2:
        raise DataError(f"dataset {name!r}: {len(tr_idx)} training sample(s) left after carving validation/test "
                        f"splits from {len(perm)} (need at least 2; use more data or a larger data.subset)")
    scale = 1 / 255 if x.dtype == torch.uint8 else 1.0
    tr_x = x[tr_idx]
    mean, std = _stats(tr_x, scale)
    # keep ids 0..n-1 within the train split so caches and memory banks index densely
    train = Split(tr_x.contiguous(), y[tr_idx].contiguous(), mean, std, scale)
    val = Split(x[val_idx].contiguous(), y[val_idx].contiguous(), mean, std, scale)
    test = Split(test_x.contiguous(), test_y.contiguous(), mean, std, scale)
    if len(val) == 0:  # val_fraction=0: select on the test split, as the published CIFAR recipes do
        val = test
    use_aug = raw.augment if augment is None else augment
    aug = Augment(pad=raw.pad, flip=True) if use_aug and x.dim() == 4 else None
    return DataSplits(name, train, val, test, raw.classes, aug)


def _check_options(name: str, source: Callable[..., RawData], options: dict[str, object]) -> None:
    import inspect

    params = inspect.signature(source).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    valid = [k for k in params if k != "root"]
    for k in options:
        if k not in params or k == "root":
            raise ConfigError(f"dataset {name!r} has no option {k!r} (options: {', '.join(valid) or 'none'})")


def list_datasets() -> list[str]:
    return DATASETS.names()


from kdlab.data import sources  # noqa: E402,F401  (registers the built-in sources)
