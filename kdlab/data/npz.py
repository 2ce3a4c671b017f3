"""Arrays from a NumPy ``.npz`` archive; :func:`npz` names the arrays it expects.

uint8 images stay uint8 (scaled by 1/255 in the pipeline); other inputs become float32.
"""
from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from numpy.lib.npyio import NpzFile

from kdlab.data import RawData, register_dataset
from kdlab.errors import ConfigError, DataError

MAX_CLASSES = 100_000  # a larger class id is a corrupt or mislabelled file, not a real label set


def resolve_file(root: str | None, path: str | None, what: str, example: str) -> Path:
    if not path and not root:
        raise DataError(f"{what}: no file given; set data.root=FILE (--root FILE) or the 'path' option to {example}")
    p = Path(path or root)  # type: ignore[arg-type]
    if path and root and not p.is_absolute() and Path(root).is_dir():
        p = Path(root) / p
    if p.is_dir():
        raise DataError(f"{what}: {p} is a directory; expected {example}")
    if not p.is_file():
        raise DataError(f"{what}: file {p} does not exist")
    return p


def _inputs(x: np.ndarray, key: str, channels_last: bool, path: Path) -> torch.Tensor:
    if x.dtype.kind not in "biuf":
        raise DataError(f"{path}: {key!r} must be numeric, found dtype {x.dtype}")
    if x.ndim < 2 or x.ndim > 4:
        raise DataError(f"{path}: {key!r} must be [N, D], [N, H, W] or [N, C, H, W], found shape {list(x.shape)}")
    if x.shape[0] == 0:
        raise DataError(f"{path}: {key!r} holds no samples")
    if 0 in x.shape[1:]:
        raise DataError(f"{path}: {key!r} has an empty dimension, shape {list(x.shape)}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if channels_last:
            x = x.transpose(0, 3, 1, 2)
        elif x.shape[1] not in (1, 2, 3, 4) and x.shape[3] in (1, 3, 4):
            raise DataError(f"{path}: {key!r} of shape {list(x.shape)} looks channels-last; "
                            "set the option channels_last: true")
    if x.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(x))
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataError(f"{path}: {key!r} contains NaN or infinite values")
    if x.dtype.itemsize > 4 and (np.abs(x) > np.finfo(np.float32).max).any():
        raise DataError(f"{path}: {key!r} has values that overflow float32")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _labels(y: np.ndarray, key: str, n: int, path: Path) -> torch.Tensor:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{path}: {key!r} must be a 1-D array of labels, found shape {list(y.shape)}")
    if y.dtype.kind not in "iu":
        raise DataError(f"{path}: {key!r} must hold integer class ids, found dtype {y.dtype}")
    if y.shape[0] != n:
        xkey = "x" if key == "y" else "x_test"
        raise DataError(f"{path}: {xkey!r} has {n} samples but {key!r} has {y.shape[0]} labels")
    if y.min() < 0:
        raise DataError(f"{path}: {key!r} contains negative labels (min {int(y.min())})")
    return torch.from_numpy(y.astype(np.int64))


def _open_archive(fh: BinaryIO, f: Path) -> NpzFile:
    try:
        archive = np.load(fh, allow_pickle=False)
    except Exception as e:  # not a zip/npy file at all: ValueError, OSError, EOFError, BadZipFile...
        raise DataError(f"{f}: not a readable .npz archive ({type(e).__name__}: {e})") from None
    if not isinstance(archive, NpzFile):
        raise DataError(f"{f}: not an .npz archive (a single .npy array?); save with np.savez(path, x=..., y=...)")
    return archive


@register_dataset("npz")
def npz(root: str | None = None, path: str | None = None, channels_last: bool = False) -> RawData:
    """A NumPy .npz archive: the file ``root``, or the ``path`` option (relative to a ``root``
    directory). Required arrays: ``x`` (inputs) and ``y`` (integer labels 0..K-1, shape [N] or [N, 1]).
    Optional: ``x_test`` with ``y_test`` (the test split; otherwise load_data carves one) and
    ``classes`` (K class names; otherwise "0" .. "K-1"). ``x`` is [N, D] vectors, [N, H, W] or
    [N, C, H, W] images, or [N, H, W, C] with ``channels_last=True``. Object arrays are refused (the
    file is read with allow_pickle=False).
    """
    if not isinstance(channels_last, bool):
        raise ConfigError(f"data option 'channels_last' must be true or false, got {channels_last!r}")
    f = resolve_file(root, path, "npz", "an .npz file with arrays x and y")
    arrays: dict[str, np.ndarray] = {}
    try:
        with f.open("rb") as fh, _open_archive(fh, f) as archive:
            for key in archive.files:
                arrays[key] = archive[key]
    except DataError:
        raise
    except OSError as e:
        raise DataError(f"cannot read {f}: {e.strerror or e}") from None
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise DataError(f"{f}: holds object arrays, which are refused (loaded with allow_pickle=False)") from None
        raise DataError(f"{f}: corrupt array in the archive ({e})") from None
    except Exception as e:  # corrupt members raise from deep inside zipfile/numpy
        raise DataError(f"{f}: corrupt array in the archive ({type(e).__name__}: {e})") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"{f}: missing array {key!r} (found: {', '.join(sorted(arrays)) or 'none'})")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{f}: 'x_test' and 'y_test' must be given together")
    x = _inputs(arrays["x"], "x", channels_last, f)
    y = _labels(arrays["y"], "y", x.shape[0], f)
    tx = ty = None
    if "x_test" in arrays:
        tx = _inputs(arrays["x_test"], "x_test", channels_last, f)
        ty = _labels(arrays["y_test"], "y_test", tx.shape[0], f)
        if tx.shape[1:] != x.shape[1:]:
            raise DataError(f"{f}: 'x_test' samples have shape {list(tx.shape[1:])} but 'x' samples "
                            f"have {list(x.shape[1:])}")
    n_labels = int(max(int(y.max()), int(ty.max()) if ty is not None else 0)) + 1
    if n_labels > MAX_CLASSES:
        raise DataError(f"{f}: label {n_labels - 1} is out of range (class ids must be 0..K-1 with K <= {MAX_CLASSES})")
    if "classes" in arrays:
        c = arrays["classes"]
        if c.ndim != 1 or c.dtype.kind not in "USiu" or c.shape[0] == 0:
            raise DataError(f"{f}: 'classes' must be a non-empty 1-D array of names, found "
                            f"{c.dtype} of shape {list(c.shape)}")
        classes = [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v) for v in c.tolist()]
        for key, lab in (("y", y), ("y_test", ty)):
            if lab is not None and int(lab.max()) >= len(classes):
                raise DataError(f"{f}: {key!r} has label {int(lab.max())} but 'classes' names only "
                                f"{len(classes)} classes")
    else:
        classes = [str(i) for i in range(n_labels)]
    raw = ("uint8 'x' values 0..255" if x.dtype == torch.uint8 else "'x' values as float32") + (
        ", channels-last in the file: transpose [N, H, W, C] to [N, C, H, W]" if channels_last and x.dim() == 4 else "")
    return RawData(x, y, tx, ty, classes, augment=False, pad=max(1, x.shape[-1] // 8) if x.dim() == 4 else 4,
                   raw=raw)
