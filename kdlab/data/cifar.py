"""CIFAR-10 and CIFAR-100 from the official "python version" pickle batches.

Expected layouts (as extracted from ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``)::

    cifar-10-batches-py/   data_batch_1 .. data_batch_5, test_batch, batches.meta
    cifar-100-python/      train, test, meta

Where they are looked for is in the docstrings of :func:`cifar10` and :func:`cifar100`. An explicit
``root`` is never silently replaced by another location.

The batches are pickles. Unpickling can run arbitrary code, so they are read with an unpickler that
resolves only the three numpy globals an array needs (``_reconstruct``, ``ndarray``, ``dtype``) and
refuses every other global.
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdlab.data import RawData, register_dataset
from kdlab.errors import ConfigError, DataError

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


class _ForbiddenGlobal(pickle.UnpicklingError):
    pass


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Resolves only the numpy globals needed to rebuild an ndarray; refuses everything else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _ForbiddenGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _ForbiddenGlobal("persistent id")


def load_pickle(path: Path) -> dict[str, Any]:
    """Read one CIFAR pickle into a dict with ``str`` keys, or raise :class:`DataError`."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read CIFAR file {path}: {e.strerror or e}") from None
    if not raw:
        raise DataError(f"CIFAR file {path} is empty")
    try:
        obj = _ArrayOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _ForbiddenGlobal as e:
        raise DataError(f"{path}: refusing to unpickle {e} (a CIFAR batch may contain only "
                        "numpy arrays, lists, strings and numbers)") from None
    except MemoryError:
        raise DataError(f"{path}: out of memory while unpickling (corrupt or not a CIFAR batch)") from None
    except Exception as e:  # truncated/corrupt pickles raise many types (EOFError, ValueError, ...)
        raise DataError(f"{path}: not a readable CIFAR pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if isinstance(k, bytes):
            k = k.decode("latin-1")
        if not isinstance(k, str):
            raise DataError(f"{path}: unexpected key {k!r} in the pickled dict")
        out[k] = v
    return out


def _require(d: dict[str, Any], key: str, path: Path) -> Any:
    if key not in d:
        raise DataError(f"{path}: missing key {key!r} (found: {', '.join(sorted(d)) or 'none'})")
    return d[key]


def _images(d: dict[str, Any], path: Path) -> np.ndarray:
    x = _require(d, "data", path)
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
        kind = f"{x.dtype} array" if isinstance(x, np.ndarray) else type(x).__name__
        raise DataError(f"{path}: 'data' must be a uint8 array, found {kind}")
    if x.ndim == 2 and x.shape[1] == 3 * 32 * 32:
        x = x.reshape(-1, 3, 32, 32)
    if x.ndim != 4 or x.shape[1:] != (3, 32, 32):
        raise DataError(f"{path}: 'data' must have shape [N, 3072], found {list(x.shape)}")
    if x.shape[0] == 0:
        raise DataError(f"{path}: batch holds no images")
    return x


def _labels(d: dict[str, Any], key: str, n: int, num_classes: int, path: Path) -> np.ndarray:
    raw = _require(d, key, path)
    try:
        y = np.asarray(raw)
    except Exception:
        raise DataError(f"{path}: {key!r} is not a list of integers") from None
    if y.ndim != 1 or (y.size and y.dtype.kind not in "iu"):
        raise DataError(f"{path}: {key!r} must be a flat list of integers, found {y.dtype} of shape {list(y.shape)}")
    if y.shape[0] != n:
        raise DataError(f"{path}: {n} images but {y.shape[0]} labels in {key!r}")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{path}: labels in {key!r} must be in [0, {num_classes - 1}], "
                        f"found range [{int(y.min())}, {int(y.max())}]")
    return y.astype(np.int64)


def _names(d: dict[str, Any], key: str, path: Path) -> list[str]:
    raw = _require(d, key, path)
    if not isinstance(raw, (list, tuple)) or not raw:
        raise DataError(f"{path}: {key!r} must be a non-empty list of class names")
    names = []
    for n in raw:
        if isinstance(n, bytes):
            n = n.decode("utf-8", errors="replace")
        if not isinstance(n, str):
            raise DataError(f"{path}: {key!r} must hold strings, found {type(n).__name__}")
        names.append(n)
    return names


def _find(root: str | None, folder: str, marker: str, what: str) -> Path:
    if root:
        candidates = [Path(root), Path(root) / folder]
    else:
        env = os.environ.get("KDLAB_DATA")
        candidates = [Path(env), Path(env) / folder] if env else []
    for c in candidates:
        if (c / marker).is_file():
            return c
    if not candidates:
        raise DataError(f"{what}: no data directory given; set data.root=DIR (--root DIR) or KDLAB_DATA to the folder "
                        f"holding {folder}/")
    looked = ", ".join(str(c) for c in candidates)
    hint = ""
    for c in candidates[:1]:
        tars = sorted(p.name for p in c.glob("*.tar.gz")) if c.is_dir() else []
        if tars:
            hint = f"; found {', '.join(tars)}: extract it first"
    missing = "" if candidates[0].exists() else f"{candidates[0]} does not exist; "
    raise DataError(f"{what} not found: {missing}no {marker} in {looked} "
                    f"(expected the official python-version batches in {folder}/){hint}")


def _file(d: Path, name: str, what: str) -> Path:
    p = d / name
    if not p.is_file():
        raise DataError(f"{what}: missing file {p}")
    return p


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"data option {name!r} must be true or false, got {value!r}")
    return value


@register_dataset("cifar10")
def cifar10(root: str | None = None) -> RawData:
    """CIFAR-10, the official python-version batches (as extracted from cifar-10-python.tar.gz): a
    directory holding data_batch_1 .. data_batch_5 (train split), test_batch (test split) and
    batches.meta (class names). Looked for in ``root``, then ``root/cifar-10-batches-py``; without
    ``root``, in ``$KDLAB_DATA``, then ``$KDLAB_DATA/cifar-10-batches-py``. 32×32 RGB images, 10 classes.
    """
    what = "CIFAR-10"
    d = _find(root, CIFAR10_DIR, "data_batch_1", what)
    meta_path = _file(d, "batches.meta", what)
    classes = _names(load_pickle(meta_path), "label_names", meta_path)
    xs, ys = [], []
    for name in CIFAR10_TRAIN:
        p = _file(d, name, what)
        batch = load_pickle(p)
        x = _images(batch, p)
        xs.append(x)
        ys.append(_labels(batch, "labels", x.shape[0], len(classes), p))
    p = _file(d, "test_batch", what)
    test = load_pickle(p)
    tx = _images(test, p)
    ty = _labels(test, "labels", tx.shape[0], len(classes), p)
    return RawData(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)),
                   torch.from_numpy(np.ascontiguousarray(tx)), torch.from_numpy(ty),
                   classes, augment=True, pad=4, raw="uint8 RGB pixels 0..255, [N, 3, 32, 32] (channels first)")


@register_dataset("cifar100")
def cifar100(root: str | None = None, coarse: bool = False) -> RawData:
    """CIFAR-100, the official python-version files (as extracted from cifar-100-python.tar.gz): a
    directory holding train, test and meta (class names). Looked for in ``root``, then
    ``root/cifar-100-python``; without ``root``, in ``$KDLAB_DATA``, then ``$KDLAB_DATA/cifar-100-python``.
    32×32 RGB images with the 100 fine labels, or with ``coarse=True`` the 20 superclasses.
    """
    what = "CIFAR-100"
    level = "coarse" if _check_bool("coarse", coarse) else "fine"
    d = _find(root, CIFAR100_DIR, "train", what)
    meta_path = _file(d, "meta", what)
    classes = _names(load_pickle(meta_path), f"{level}_label_names", meta_path)
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name in ("train", "test"):
        p = _file(d, name, what)
        batch = load_pickle(p)
        x = _images(batch, p)
        y = _labels(batch, f"{level}_labels", x.shape[0], len(classes), p)
        out[name] = (torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y))
    return RawData(*out["train"], *out["test"], classes, augment=True, pad=4,
                   raw="uint8 RGB pixels 0..255, [N, 3, 32, 32] (channels first)")
