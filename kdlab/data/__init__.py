"""Dataset registry and the in-memory data pipeline.

A registered source returns :class:`RawData` (train and test arrays as tensors); :func:`load_data`
turns it into seeded train/val/test :class:`Split` objects with per-dataset normalisation, and
:class:`Loader` yields :class:`kdlab.core.Batch` objects. Everything stays in memory and batches are
gathered by index: on CPU this is faster than DataLoader workers for datasets of this size.

    @register_dataset("digits")
    def digits(root: str | None = None) -> RawData: ...
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal

import torch
from pydantic import Field
from torch import Tensor

from kdlab.core import Batch, DataInfo
from kdlab.data.augment import Augment, augment, mix, mix_params
from kdlab.errors import ConfigError, DataError
from kdlab.registry import Registry
from kdlab.spec import Spec

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
    # what a deployment feeds: the source's raw values times ``raw_scale`` are ``train_x``/``test_x``
    # (digits: sklearn's pixels run 0..16 and the source divides them by 16), and ``raw`` says in one
    # line what those raw values are, so an exported model's pre-processing record is complete
    raw_scale: float = 1.0
    raw: str = ""
    # token data: x holds token ids ``[N, L]`` right-padded with this id (see :class:`TokenIdSplit`)
    pad_id: int | None = None
    vocab_size: int | None = None  # token data: the size of the vocabulary the ids index


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
class TokenIdSplit(Split):
    """A split of texts as token ids: ``x`` ``[N, L]`` right-padded with ``pad_id``, never normalised.
    Rows are gathered as ``{"input_ids", "attention_mask"}`` cut to the batch's longest row."""

    pad_id: int = 0

    def gather(self, idx: Tensor) -> dict[str, Tensor]:  # type: ignore[override]
        return token_batch(self.x[idx], self.pad_id)


class DataSpec(Spec):
    """The ``data:`` section: a registered source, its options, and how its splits are made.

    Splits are a pure function of ``split_seed`` (not the training seed), so every run of a dataset
    with the same spec, whatever its ``seed``, has the same train/val/test samples.
    """

    name: str = "digits"
    root: str | None = None
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    subset: int | None = Field(None, gt=0)
    augment: bool | None = None  # crop + flip; None: the dataset's default
    # mix training inputs with a partner sample (mixup | cutmix), the same view for teacher and student
    mix: Literal["none", "mixup", "cutmix"] = "none"
    mix_alpha: float = Field(1.0, gt=0)  # λ ~ Beta(α, α); 1: uniform
    # what a live teacher sees: the student's own augmented view ("same": consistent teaching, Beyer
    # et al. 2022), another view of the same sample ("independent") or the plain sample ("clean")
    teacher_view: Literal["same", "independent", "clean"] = "same"
    split_seed: int = Field(0, ge=0)  # seed of the train/val(/test) split and of the subset
    options: dict[str, Any] = {}


@dataclass
class DataSplits:
    name: str
    train: Split
    val: Split
    test: Split
    classes: list[str]
    augment: Augment | None = None
    # where the splits came from, recorded in every checkpoint (see :func:`load_data`)
    provenance: dict[str, Any] = field(default_factory=dict)
    train_rows: Tensor | None = None  # rows of the source's training array in the train split
    test_rows: Tensor | None = None  # rows of the source's training array carved as test (None: official test)
    raw_scale: float = 1.0  # RawData.raw_scale: source raw values × raw_scale = the stored x
    raw: str = ""  # RawData.raw: what the source's raw values are
    vocab_size: int | None = None  # token data: the vocabulary size (models take it as ``vocab_size``)

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


def token_batch(ids: Tensor, pad_id: int) -> dict[str, Tensor]:
    """Right-padded token ids ``[B, L]`` → ``{"input_ids": [B, l], "attention_mask": [B, l]}`` (int64),
    ``l`` = the longest row's length (at least 1): trailing all-padding columns are dropped, which
    changes no output of a model that masks padding and saves its time."""
    attn = ids != pad_id
    lengths = attn.long().cumsum(1).argmax(1) + 1  # last non-pad position + 1 (padding is on the right)
    n = int(lengths.max()) if ids.shape[0] and bool(attn.any()) else 1
    return {"input_ids": ids[:, :n].long().contiguous(), "attention_mask": attn[:, :n].long().contiguous()}


def rows_fingerprint(rows: Tensor) -> str:
    """A short hash of a set of row ids (order-free)."""
    return hashlib.sha256(torch.sort(rows.long()).values.numpy().tobytes()).hexdigest()[:16]


def _content_fingerprint(x: Tensor, y: Tensor) -> str:
    h = hashlib.sha256()
    h.update(str((tuple(x.shape), str(x.dtype))).encode())
    h.update(x.contiguous().numpy().tobytes())
    h.update(y.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def split_rows(n: int, *, split_seed: int, val_fraction: float, subset: int | None,
               carve_test: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """(train, val, test) row ids into a source's ``n`` training samples: a pure function of its
    arguments, so a checkpoint's split can be recomputed from its recorded spec. ``test`` is None
    when the source has an official test split."""
    g = torch.Generator().manual_seed(split_seed)
    perm = torch.randperm(n, generator=g)
    if subset:
        perm = perm[:subset]
    n_val = int(round(len(perm) * val_fraction))
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    test_idx = None
    if carve_test:
        n_test = n_val or max(1, len(perm) // 10)
        test_idx, tr_idx = tr_idx[:n_test], tr_idx[n_test:]
    return tr_idx, val_idx, test_idx


INDEPENDENT_VIEW = 1 << 20  # offset of the teacher's views under data.teacher_view=independent


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
            view = torch.full_like(idx, view_id)
            y = None if self.split.y is None else self.split.y[idx]
            x, mixed = self.view_of(idx, view)
            t_x = None
            if self.augment is not None and self.augment.teacher_view == "clean":
                t_x = self.split.gather(idx)
            elif self.augment is not None and self.augment.teacher_view == "independent":
                # a view id no training epoch uses: other crop, flip, mixing partner and λ
                t_x = self.view_of(idx, view + INDEPENDENT_VIEW)[0]
            ids = idx if self.split.index is None else self.split.index[idx]
            yield Batch(x, y, ids, view if self.augment is not None else torch.zeros_like(idx), mixed, t_x)

    def view_of(self, idx: Tensor, view: Tensor) -> tuple[Tensor, tuple[Tensor | None, Tensor] | None]:
        """Samples ``idx`` ``[B]`` (rows of the split) as augmentation view ``view`` ``[B]``: the inputs
        and, when mixed, (partner targets, λ). A pure function of (seed, idx, view)."""
        x = self.split.gather(idx)
        cfg = self.augment
        if cfg is None:
            return x, None
        if cfg.crops and x.dim() == 4:
            x = augment(x, idx, view, self.seed, cfg)
        if cfg.mix == "none":
            return x, None
        # the partner is itself augmented as its own (index, view)
        partner, lam = mix_params(idx, view, self.seed, len(self.split), cfg)
        px = self.split.gather(partner)
        if cfg.crops and px.dim() == 4:
            px = augment(px, partner, view, self.seed, cfg)
        x, lam = mix(x, px, lam, idx, view, self.seed, cfg)
        return x, (None if self.split.y is None else self.split.y[partner], lam)

def _stats(x: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    xf = x.float() * scale
    if xf.dim() == 4:
        mean = xf.mean(dim=(0, 2, 3))
        std = xf.std(dim=(0, 2, 3))
    else:
        mean, std = xf.mean(0), xf.std(0)
    return mean, std.clamp_min(1e-6)


def load_data(name: str, root: str | None = None, val_fraction: float = 0.1, split_seed: int = 0,
              subset: int | None = None, augment: bool | None = None, mix: str = "none", mix_alpha: float = 1.0,
              teacher_view: str = "same", **kwargs: Any) -> DataSplits:
    """Load a registered dataset into train/val/test splits made by :func:`split_rows`.

    The val split (and, for a source without an official test split, the test split) is carved
    out of the training data with a generator seeded by ``split_seed``; the normalisation statistics
    come from the remaining train split only. ``subset`` keeps the first ``subset`` training samples
    of that permutation (and at most ``subset`` test samples). ``DataSplits.provenance`` records the
    source, its options, the split and fingerprints of the source's content and of the train rows.
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
    n_total = int(x.shape[0])
    tr_idx, val_idx, test_idx = split_rows(n_total, split_seed=split_seed, val_fraction=val_fraction, subset=subset,
                                           carve_test=raw.test_x is None)
    if test_idx is not None:  # carved from the training data
        test_x, test_y = x[test_idx], y[test_idx]
    else:
        assert raw.test_x is not None and raw.test_y is not None
        test_x, test_y = raw.test_x, raw.test_y
        if subset:
            test_x, test_y = test_x[:subset], test_y[:subset]
    if len(tr_idx) < 2:
        raise DataError(f"dataset {name!r}: {len(tr_idx)} training sample(s) left after carving validation/test "
                        f"splits from {n_total if not subset else min(subset, n_total)} (need at least 2; use more "
                        "data or a larger data.subset)")
    scale = 1 / 255 if x.dtype == torch.uint8 else 1.0
    tr_x = x[tr_idx]
    pad_id = raw.pad_id
    if pad_id is not None and mix != "none":
        raise ConfigError(f"data.mix={mix} mixes input values, but {name!r} holds token ids; use data.mix=none")
    # token ids are never normalised
    mean, std = (torch.zeros(1), torch.ones(1)) if pad_id is not None else _stats(tr_x, scale)
    # keep ids 0..n-1 within the train split so caches and memory banks index densely
    def make(sx: Tensor, sy: Tensor) -> Split:
        if pad_id is None:
            return Split(sx.contiguous(), sy.contiguous(), mean, std, scale)
        return TokenIdSplit(sx.contiguous(), sy.contiguous(), mean, std, scale, pad_id=pad_id)

    train, val, test = make(tr_x, y[tr_idx]), make(x[val_idx], y[val_idx]), make(test_x, test_y)
    if len(val) == 0:  # val_fraction=0: select on the test split, as the published CIFAR recipes do
        val = test
    use_aug = raw.augment if augment is None else augment
    if mix not in ("none", "mixup", "cutmix"):
        raise ConfigError(f"data.mix must be none, mixup or cutmix, not {mix!r}")
    if mix == "cutmix" and x.dim() != 4:
        raise ConfigError(f"data.mix=cutmix pastes image boxes, but {name!r} holds vectors; use data.mix=mixup")
    crop = bool(use_aug and x.dim() == 4)
    aug = None
    if crop or mix != "none":
        aug = Augment(pad=raw.pad if crop else 0, flip=crop, mix=mix, mix_alpha=mix_alpha, teacher_view=teacher_view)
    if teacher_view not in ("same", "independent", "clean"):
        raise ConfigError(f"data.teacher_view must be same, independent or clean, not {teacher_view!r}")
    if teacher_view != "same" and aug is None:
        raise ConfigError(f"data.teacher_view={teacher_view} needs augmentation to differ from the student's view: "
                          "set data.augment=true or data.mix")
    provenance = {"name": name, "root": root, "options": dict(kwargs), "val_fraction": val_fraction,
                  "subset": subset, "split_seed": split_seed, "augment": augment, "mix": mix, "mix_alpha": mix_alpha,
                  **({"teacher_view": teacher_view} if teacher_view != "same" else {}), "source_rows": n_total,
                  "source_fingerprint": _content_fingerprint(x, y), "official_test": test_idx is None,
                  "train_rows_fingerprint": rows_fingerprint(tr_idx)}
    return DataSplits(name, train, val, test, raw.classes, aug, provenance, tr_idx, test_idx, raw.raw_scale, raw.raw,
                      vocab_size=raw.vocab_size)


def load_data_spec(spec: DataSpec) -> DataSplits:
    """:func:`load_data` for a ``data:`` config section."""
    return load_data(spec.name, root=spec.root, val_fraction=spec.val_fraction, split_seed=spec.split_seed,
                     subset=spec.subset, augment=spec.augment, mix=spec.mix, mix_alpha=spec.mix_alpha,
                     teacher_view=spec.teacher_view, **spec.options)


def spec_of(provenance: dict[str, Any]) -> DataSpec:
    """The DataSpec a checkpoint's recorded provenance describes (to reload its data)."""
    keys = ("name", "root", "options", "val_fraction", "subset", "split_seed", "augment", "mix", "mix_alpha",
            "teacher_view")
    return DataSpec(**{k: provenance[k] for k in keys if provenance.get(k) is not None})


def data_for_checkpoint(meta: dict[str, Any], name: str | None = None, root: str | None = None) -> DataSplits:
    """The data a checkpoint was trained on, as its metadata records it (source, options, split).

    ``name``/``root`` override the recorded source and directory (another dataset, or the same
    files moved). A checkpoint that records no data needs ``name``.
    """
    prov = meta.get("data_provenance") or {}
    if prov and (name is None or name == prov.get("name")):
        spec = spec_of(prov)
        if root is not None:
            spec = spec.model_copy(update={"root": root})
        data = load_data_spec(spec)
        if prov.get("view"):  # trained on a view of the data (cross-modal): see it the same way
            from kdlab.data.views import view_data

            data = view_data(data, prov["view"])
        return data
    name = name or meta.get("data")
    if not name:
        raise ConfigError("the checkpoint does not record which dataset it was trained on: give --data NAME")
    return load_data(name, root=root)


def teacher_overlap(teacher: dict[str, Any], data: DataSplits) -> int | None:
    """How many of ``data``'s test samples a teacher with this recorded provenance was trained on.

    None when that cannot be known (no provenance, another source, or an official test split,
    which no training split contains). The teacher's train rows are recomputed from its recorded
    split and checked against its recorded fingerprint first.
    """
    me = data.provenance
    if not teacher or data.test_rows is None or teacher.get("source_fingerprint") != me.get("source_fingerprint"):
        return None
    rows, _, _ = split_rows(int(teacher["source_rows"]), split_seed=int(teacher["split_seed"]),
                            val_fraction=float(teacher["val_fraction"]), subset=teacher.get("subset"),
                            carve_test=not teacher.get("official_test", False))
    if rows_fingerprint(rows) != teacher.get("train_rows_fingerprint"):
        return None  # recorded by a different split procedure: cannot be recomputed
    return int(torch.isin(data.test_rows, rows).sum())


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
