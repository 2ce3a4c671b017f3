"""Fashion-MNIST from IDX files (gzipped or not); :func:`fashion_mnist` says where they are looked for."""
from __future__ import annotations

import gzip
import math
import os
import struct
from pathlib import Path

import numpy as np
import torch

from kdlab.data import RawData, register_dataset
from kdlab.errors import DataError

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
_DTYPES: dict[int, np.dtype] = {code: np.dtype(t) for code, t in
                                 {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}.items()}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (magic 0x0000TTDD, big-endian dims, then data); ``.gz`` is decompressed."""
    path = Path(path)
    try:
        raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _DTYPES[raw[2]]
    need = math.prod(dims) * dtype.itemsize  # Python ints: no overflow for absurd headers
    if len(raw) - header != need:
        raise DataError(f"{path}: IDX header says {dims} ({need} bytes) but the file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def find_dir(root: str | None) -> Path:
    if root:  # an explicit directory is never silently swapped for another location
        candidates = [root, os.path.join(root, "fashion-mnist")]
    else:
        env = os.environ.get("KDLAB_DATA")
        candidates = [env, os.path.join(env, "fashion-mnist")] if env else []
        candidates.append(DEBIAN_DIR)
    for c in candidates:
        if c and all(_file(Path(c), f) for f in FILES.values()):
            return Path(c)
    raise DataError(
        "Fashion-MNIST IDX files not found (looked in: " + ", ".join(str(c) for c in candidates if c) + "). "
        "Install them with `apt-get install dataset-fashion-mnist`, or set KDLAB_DATA / data.root=DIR (--root DIR) "
        "to a directory holding train-images-idx3-ubyte[.gz] and the three other IDX files."
    )


def _file(d: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (d / name).is_file():
            return d / name
    return None


@register_dataset("fashion-mnist")
def fashion_mnist(root: str | None = None) -> RawData:
    """Fashion-MNIST: the IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte (train split),
    t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (test split), each optionally gzipped (``.gz``),
    all in one directory. Looked for in ``root``, then ``root/fashion-mnist``; without ``root``, in
    ``$KDLAB_DATA``, ``$KDLAB_DATA/fashion-mnist``, then ``/usr/share/datasets/fashion-mnist`` (Debian's
    dataset-fashion-mnist package). 28×28 grayscale images, 10 clothing classes.
    """
    d = find_dir(root)
    arr = {k: read_idx(_file(d, v)) for k, v in FILES.items()}  # type: ignore[arg-type]
    for split in ("train", "test"):
        if arr[f"{split}_x"].shape[0] != arr[f"{split}_y"].shape[0]:
            raise DataError(f"{d}: {split} images and labels differ in count")
    tx = torch.from_numpy(arr["train_x"].copy()).unsqueeze(1)  # [N, 1, 28, 28] uint8
    ty = torch.from_numpy(arr["train_y"].astype(np.int64))
    vx = torch.from_numpy(arr["test_x"].copy()).unsqueeze(1)
    vy = torch.from_numpy(arr["test_y"].astype(np.int64))
    return RawData(tx, ty, vx, vy, CLASSES, augment=False, pad=2,
                   raw="IDX uint8 pixels 0..255, [N, 1, 28, 28]")
