"""On-disk format of a teacher-output store: a directory of memory-mapped ``.npy`` arrays.

Layout::

    CACHE/
      manifest.json          format version, geometry, per-array file/shape/dtype/SHA-256, and the
                             caller's ``info`` (teacher hash, data fingerprint, augmentation, ...)
      logits.npy             [views * num_samples, C]            (full logits), or
      topk_values.npy        [views * num_samples, k]            (top-k log-probabilities)
      topk_indices.npy       [views * num_samples, k]  int16/32
      feat.<name>.npy        [views * num_samples, *shape]       (optional named features)

Row ``view * num_samples + index`` holds the outputs for sample ``index`` of the split seen in
augmentation view ``view``. Every array is a plain ``.npy`` file, so ``numpy.load(f, mmap_mode="r")``
reads it without kdlab.

A store is written into a temporary sibling directory, every file is fsynced, the manifest (with
checksums) is written last, and the directory is renamed into place: a reader sees the old store
or the new one, never a half-written one. A directory that exists but holds no manifest is never
overwritten.

Reading maps the files and gathers rows on demand. Pages of a file mapping that the process has
touched count towards its resident set, so a reader over a store larger than ``max_resident``
bytes drops its mapped pages (``madvise(MADV_DONTNEED)``; the kernel's page cache keeps them)
whenever it may have touched that many bytes since the last drop (counting, per row read, the
64 KiB windows the kernel maps around a page fault: an upper bound). This module knows nothing
about teachers or models.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from kdlab.errors import CheckpointError

FORMAT = "kdlab-teacher-store"
VERSION = 1
MANIFEST = "manifest.json"
_PAGE = mmap.PAGESIZE
# A page fault on a file mapping also maps the neighbouring pages already in the page cache
# ("fault-around", 64 KiB by default), so one row read can make up to that much resident.
_FAULT_AROUND = max(_PAGE, 64 << 10)
DTYPES = ("float32", "float16", "int16", "int32", "int64", "uint8")


@dataclass(frozen=True)
class ArraySpec:
    """One array of the store: ``name`` (file ``name.npy``), per-row ``shape`` and numpy ``dtype``."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"array {self.name!r}: dtype {self.dtype!r} not one of {DTYPES}")
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"bad array name {self.name!r}")

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": shape})
    return buf.getvalue()


class StoreWriter:
    """Write a store of ``views * num_samples`` rows; :meth:`commit` publishes it atomically.

    ``info`` is copied into the manifest verbatim (JSON-serialisable). Use as a context manager:
    an exception discards the temporary directory and leaves any existing store untouched.
    """

    def __init__(self, path: str | Path, num_samples: int, views: int, arrays: Iterable[ArraySpec],
                 info: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        if num_samples < 1 or views < 1:
            raise ValueError(f"num_samples and views must be >= 1, got {num_samples}, {views}")
        if self.path.exists() and (not self.path.is_dir() or (
                any(self.path.iterdir()) and not (self.path / MANIFEST).is_file())):
            raise CheckpointError(f"refusing to overwrite {self.path}: it exists and is not a kdlab cache "
                                  f"(no {MANIFEST})")
        self.num_samples, self.views = num_samples, views
        self.specs = {a.name: a for a in arrays}
        if not self.specs:
            raise ValueError("a store needs at least one array")
        self.info = dict(info or {})
        self.rows = views * num_samples
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.parent / f".{self.path.name}.tmp-{secrets.token_hex(4)}"
        self.tmp.mkdir()
        self._fds: dict[str, int] = {}
        self._offset: dict[str, int] = {}
        self._written = np.zeros(self.rows, dtype=bool)
        try:
            for name, spec in self.specs.items():
                header = _npy_header(spec.dtype, (self.rows, *spec.shape))
                fd = os.open(self.tmp / f"{name}.npy", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                self._fds[name] = fd
                os.pwrite(fd, header, 0)
                os.ftruncate(fd, len(header) + self.rows * spec.row_bytes)  # sparse until written
                self._offset[name] = len(header)
        except BaseException:
            self.abort()
            raise

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def write(self, index: np.ndarray, view: np.ndarray, arrays: Mapping[str, np.ndarray]) -> None:
        """Store one batch: ``arrays[name]`` is ``[B, *shape]`` for samples ``index`` ``[B]`` in
        views ``view`` ``[B]``. Runs of consecutive rows are written with one call."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        view = np.asarray(view, dtype=np.int64).reshape(-1)
        if set(arrays) != set(self.specs):
            raise ValueError(f"write needs arrays {sorted(self.specs)}, got {sorted(arrays)}")
        if index.shape != view.shape:
            raise ValueError("index and view differ in length")
        if len(index) and (index.min() < 0 or index.max() >= self.num_samples or view.min() < 0
                           or view.max() >= self.views):
            raise ValueError(f"(index, view) out of range: store holds {self.num_samples} samples x "
                             f"{self.views} views")
        rows = view * self.num_samples + index
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        starts = np.concatenate([[0], breaks])
        ends = np.concatenate([breaks, [len(rows)]])
        for name, spec in self.specs.items():
            a = np.asarray(arrays[name])
            if a.shape != (len(index), *spec.shape):
                raise ValueError(f"array {name!r}: expected shape {(len(index), *spec.shape)}, got {a.shape}")
            a = np.ascontiguousarray(a[order], dtype=spec.dtype)
            for s, e in zip(starts, ends):
                os.pwrite(self._fds[name], a[s:e].tobytes(), self._offset[name] + int(rows[s]) * spec.row_bytes)
        self._written[rows] = True

    def commit(self) -> Path:
        """fsync, checksum, write the manifest, rename into place. Returns the store's path."""
        missing = int((~self._written).sum())
        if missing:
            self.abort()
            raise CheckpointError(f"store {self.path} incomplete: {missing} of {self.rows} rows never written")
        arrays: dict[str, Any] = {}
        for name, fd in list(self._fds.items()):
            os.fsync(fd)
            os.close(fd)
            del self._fds[name]
            f = self.tmp / f"{name}.npy"
            spec = self.specs[name]
            arrays[name] = {"file": f.name, "shape": [self.rows, *spec.shape], "dtype": spec.dtype,
                            "bytes": f.stat().st_size, "sha256": sha256_file(f)}
        manifest = {"format": FORMAT, "version": VERSION, "num_samples": self.num_samples, "views": self.views,
                    "row": "view * num_samples + index", "arrays": arrays, **self.info}
        mpath = self.tmp / MANIFEST
        with open(mpath, "w") as fh:
            fh.write(json.dumps(manifest, indent=2, default=str))
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(self.tmp)
        old = None
        if self.path.exists():
            old = self.path.parent / f".{self.path.name}.old-{secrets.token_hex(4)}"
            os.rename(self.path, old)  # readers holding the old files keep them until they close
        os.rename(self.tmp, self.path)
        _fsync_dir(self.path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.path

    def abort(self) -> None:
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of the store at ``path``; CheckpointError if missing or unreadable."""
    m = Path(path) / MANIFEST
    if not m.is_file():
        raise CheckpointError(f"{path} is not a kdlab cache ({MANIFEST} not found)")
    try:
        manifest = json.loads(m.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cache manifest {m} is corrupt (not valid JSON: {e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{m} is not a kdlab cache manifest")
    if manifest.get("version") != VERSION:
        raise CheckpointError(f"cache {path} has format version {manifest.get('version')}; this kdlab reads "
                              f"version {VERSION}: rebuild it")
    return manifest


class Store:
    """Read access to a store: memory-mapped arrays gathered by ``(index, view)``.

    verify: check every file's SHA-256 against the manifest (reads the whole store once; the
    kernel's page cache absorbs it, resident memory does not grow).
    max_resident: bytes of mapped pages the reader may keep resident; see the module docstring.
    """

    def __init__(self, path: str | Path, verify: bool = True, max_resident: int | None = 256 << 20) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.num_samples = int(self.manifest["num_samples"])
        self.views = int(self.manifest["views"])
        self.max_resident = max_resident
        self._maps: dict[str, mmap.mmap] = {}
        self.arrays: dict[str, np.ndarray] = {}
        self._touched = 0
        try:
            for name, a in self.manifest["arrays"].items():
                f = self.path / a["file"]
                if not f.is_file():
                    raise CheckpointError(f"cache {self.path} is corrupt: {a['file']} is missing")
                if f.stat().st_size != a["bytes"]:
                    raise CheckpointError(f"cache {self.path} is corrupt: {a['file']} has {f.stat().st_size} bytes, "
                                          f"the manifest says {a['bytes']} (truncated or overwritten)")
                if verify and sha256_file(f) != a["sha256"]:
                    raise CheckpointError(f"cache {self.path} is corrupt: {a['file']} checksum mismatch; "
                                          f"delete it or rebuild it (kdlab cache build ... --force)")
                self._open(name, f, a)
        except BaseException:
            self.close()
            raise
        self.total_bytes = sum(a["bytes"] for a in self.manifest["arrays"].values())

    def _open(self, name: str, f: Path, a: dict[str, Any]) -> None:
        with open(f, "rb") as fh:
            try:
                version = np.lib.format.read_magic(fh)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read_header(fh)
            except ValueError as e:
                raise CheckpointError(f"cache {self.path} is corrupt: {a['file']} has no valid .npy header "
                                      f"({e})") from None
            offset = fh.tell()
            if dtype.hasobject or dtype.name not in DTYPES:  # never an object (pickled) array
                raise CheckpointError(f"cache {self.path} is corrupt: {a['file']} header has dtype {dtype}, not one "
                                      f"of {', '.join(DTYPES)}")
            if list(shape) != list(a["shape"]) or fortran or dtype != np.dtype(a["dtype"]):
                raise CheckpointError(f"cache {self.path} is corrupt: {a['file']} header {shape} {dtype} does not "
                                      f"match the manifest {a['shape']} {a['dtype']}")
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        self._maps[name] = mm
        count = int(np.prod(shape, dtype=np.int64))
        self.arrays[name] = np.frombuffer(mm, dtype=dtype, count=count, offset=offset).reshape(shape)

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def rows(self, index: np.ndarray, view: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        view = np.asarray(view, dtype=np.int64).reshape(-1)
        if len(index) and (index.min() < 0 or index.max() >= self.num_samples):
            raise CheckpointError(f"sample index {int(index.max())} outside the cache ({self.num_samples} samples): "
                                  f"the cache was built for a different split")
        if len(view) and (view.min() < 0 or view.max() >= self.views):
            bad = int(view.max())
            raise CheckpointError(f"augmentation view {bad} is not in the cache (it holds {self.views} view"
                                  f"{'s' if self.views != 1 else ''}); the loader must cycle through the cached "
                                  f"views (Loader.views = {self.views})")
        return view * self.num_samples + index

    def read(self, index: np.ndarray, view: np.ndarray, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Copies of rows ``(index, view)`` of the named arrays (all by default)."""
        rows = self.rows(index, view)
        names = list(self.arrays) if names is None else list(names)
        out = {n: self.arrays[n][rows] for n in names}
        if self.max_resident is not None and self.total_bytes > self.max_resident:
            for n in names:
                rb = self.arrays[n].itemsize * int(np.prod(self.arrays[n].shape[1:], dtype=np.int64))
                self._touched += len(rows) * (-(-rb // _FAULT_AROUND) + 1) * _FAULT_AROUND  # an upper bound
            if self._touched >= self.max_resident:
                self.release()
        return out

    def release(self) -> None:
        """Drop this process's mapped pages (they stay in the page cache; later reads re-map them)."""
        for mm in self._maps.values():
            mm.madvise(mmap.MADV_DONTNEED)
        self._touched = 0

    def close(self) -> None:
        self.arrays.clear()
        for mm in self._maps.values():
            try:
                mm.close()
            except BufferError:  # a caller still holds a view; the map closes when it is collected
                pass
        self._maps.clear()


def verify_store(path: str | Path) -> dict[str, Any]:
    """Check sizes and checksums of every array; returns the manifest or raises CheckpointError."""
    with Store(path, verify=True) as s:
        return s.manifest
