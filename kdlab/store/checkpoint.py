"""Atomic, checksummed checkpoints. Weights in safetensors, metadata in JSON, training state
(optimiser, RNG) in a ``torch.save`` file that is only ever read with ``weights_only=True``.

A checkpoint ``NAME`` is the pair ``NAME.safetensors`` + ``NAME.json``; the JSON records the
SHA-256 of the weights file, so a truncated or corrupted file is detected on load.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from kdlab.errors import CheckpointError


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Any) -> None:
    """``write(tmp_path)`` then fsync and rename over ``path``: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda p: Path(p).write_text(text))


def save_weights(stem: str | Path, module: nn.Module, meta: dict[str, Any]) -> None:
    """Write ``stem.safetensors`` and ``stem.json`` (meta + checksum). Weights first, so a JSON
    always describes a complete weights file."""
    stem = Path(stem)
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    # tied parameters (a language model's input and output embeddings) share storage, which
    # safetensors refuses: each extra name gets its own copy (loading assigns both to the one tensor)
    seen: set[tuple[int, int]] = set()
    for k, v in tensors.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset())
        if key in seen and v.numel():
            tensors[k] = v.clone()
        seen.add(key)
    weights = stem.with_suffix(".safetensors")
    atomic_write(weights, lambda p: save_file(tensors, p))
    meta = {**meta, "sha256": sha256_file(weights)}
    atomic_write_text(stem.with_suffix(".json"), json.dumps(meta, indent=2, default=str))


def load_meta(stem: str | Path) -> dict[str, Any]:
    stem = Path(str(stem).removesuffix(".safetensors").removesuffix(".json"))
    meta_path = stem.with_suffix(".json")
    if not meta_path.is_file():
        raise CheckpointError(f"checkpoint metadata {meta_path} not found")
    try:
        return json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint metadata {meta_path} is not valid JSON: {e}") from None


def load_weights(stem: str | Path, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return (state dict, meta); refuses a file whose checksum does not match its JSON."""
    stem = Path(str(stem).removesuffix(".safetensors").removesuffix(".json"))
    weights = stem.with_suffix(".safetensors")
    if not weights.is_file():
        raise CheckpointError(f"checkpoint weights {weights} not found")
    meta = load_meta(stem)
    if verify and meta.get("sha256") and sha256_file(weights) != meta["sha256"]:
        raise CheckpointError(f"checkpoint {weights} is corrupt or truncated (checksum mismatch)")
    try:
        return load_file(str(weights)), meta
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"cannot read {weights}: {e}") from None


def _digest(obj: Any, h: "hashlib._Hash | None" = None) -> str:
    """SHA-256 over a nested state (tensors by dtype, shape and bytes; everything else by repr)."""
    top = h is None
    h = h or hashlib.sha256()
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(b"{")
        for k, v in obj.items():
            h.update(repr(k).encode())
            _digest(v, h)
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[" if isinstance(obj, list) else b"(")
        for v in obj:
            _digest(v, h)
        h.update(b"]")
    else:
        h.update(repr(obj).encode())
    return h.hexdigest() if top else ""


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save`` of ``state`` plus a checksum of its content, written atomically."""
    state = {**state, "_sha256": _digest(state)}
    atomic_write(path, lambda p: torch.save(state, p))


def load_state(path: str | Path) -> dict[str, Any]:
    """Training state (optimiser, scheduler, RNG). ``weights_only=True``: never runs pickled code.
    A checksum mismatch, a truncated file or anything but tensors and plain data is a CheckpointError
    naming the file."""
    import warnings

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"training state {path} not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        msg = str(e)
        if "WeightsUnpickler error" in msg or "Weights only load failed" in msg:
            detail = ""
            if "WeightsUnpickler error:" in msg:
                detail = msg.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()[0]
            detail = detail.split(". ", 1)[0]  # drop torch's advice on allow-listing globals
            raise CheckpointError(f"refusing to load {path}: not a training state of plain tensors and data "
                                  f"({detail or 'weights-only unpickling failed'}); nothing in it was run") from None
        first = msg.strip().splitlines()[0] if msg.strip() else type(e).__name__
        raise CheckpointError(f"training state {path} is corrupt or truncated ({first})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"training state {path} is not a kdlab training state (found {type(state).__name__})")
    expected = state.pop("_sha256", None)
    if expected is not None and _digest(state) != expected:
        raise CheckpointError(f"training state {path} is corrupt (checksum mismatch)")
    return state
