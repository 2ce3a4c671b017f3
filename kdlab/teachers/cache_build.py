"""Filling a teacher-output store: run the teacher once per ``(index, view)`` and write what it said.

:func:`build_cache` writes a store; :func:`ensure_cache` reuses a matching one, rebuilds a stale one
(saying why) and refuses a corrupt one; :func:`cache_for_run` does that for a run config. A cache's
identity (:func:`identity`) is the teacher's weights, its input transform, the training data, the
augmentation and the normalisation; :func:`mismatches` says in words why a cache does not serve a
run. Reading it back: :class:`kdlab.teachers.cached.CachedTeacher`.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from kdlab.core import Teacher
from kdlab.data import DataSplits, Loader
from kdlab.errors import CheckpointError, ConfigError
from kdlab.spec import Spec
from kdlab.store.format import MANIFEST, ArraySpec, StoreWriter, read_manifest, sha256_file
from kdlab.teachers.cached import CachedTeacher, cache_loader

DTYPES = ("float32", "float16")
AUGMENT_NEEDS_VIEWS = (
    "cache: data augmentation is on, but a cache holds the teacher's outputs for the inputs it was built "
    "from; with fresh random crops every epoch the student would be matched to soft labels of inputs it "
    "never sees. Set cache.views=N to cache N augmented views per sample (epoch e trains on view e % N, "
    "exactly the input the teacher saw), or turn augmentation off (data.augment=false).")


class CacheSpec(Spec):
    """The ``cache:`` section of a run: where the teacher's outputs are kept and, for a new cache,
    its layout (None: whatever an existing cache holds; a new one stores full float32 logits)."""

    dir: str  # cache directory: reused when it matches, built when missing, rebuilt when stale
    views: int | None = Field(None, ge=1)  # augmented views per sample; required with augmentation
    topk: int | None = Field(None, ge=1)  # store top-k log-probabilities instead of full logits
    dtype: Literal["float32", "float16"] | None = None
    features: list[str] = []  # teacher features to cache too (e.g. pooled), for feature methods


# ---------------------------------------------------------------- identity of a teacher and of data

def _hash_value(h: "hashlib._Hash", v: Any) -> None:
    if isinstance(v, Tensor):
        t = v.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    else:
        h.update(repr(v).encode())


def teacher_fingerprint(teacher: Teacher | nn.Module) -> str:
    """SHA-256 of the teacher's weights: its architecture spec and every parameter and buffer (a
    module, or a wrapper with ``.module``), or the bytes of its file (a wrapper with ``.path``,
    e.g. an ONNX teacher). Other teachers must provide ``fingerprint()``."""
    fp = getattr(teacher, "fingerprint", None)
    if callable(fp):
        return str(fp())
    module = teacher if isinstance(teacher, nn.Module) else getattr(teacher, "module", None)
    h = hashlib.sha256()
    path = getattr(teacher, "path", None)
    if isinstance(module, nn.Module):
        h.update(type(module).__qualname__.encode())
        h.update(json.dumps(getattr(module, "kdlab_spec", None), sort_keys=True, default=str).encode())
        for name, v in module.state_dict().items():
            h.update(name.encode())
            _hash_value(h, v)
    elif isinstance(path, (str, Path)) and Path(path).is_file():
        h.update(type(teacher).__qualname__.encode())
        h.update(sha256_file(Path(path)).encode())
    else:
        raise ConfigError(f"cannot fingerprint a teacher of type {type(teacher).__name__} for a cache: give it a "
                          f"fingerprint() method, or pass teacher_hash=")
    return h.hexdigest()


def transform_fingerprint(teacher: Teacher) -> str | None:
    """SHA-256 of the values captured by the teacher's ``input_transform`` (e.g. a re-normalisation
    to the teacher's own statistics); None without one. A transform without a closure is
    identified by its ``repr``: give such objects a ``__repr__`` that describes them, or the cache
    is rebuilt every time (never reused by mistake)."""
    tf = getattr(teacher, "input_transform", None)
    if tf is None:
        return None
    h = hashlib.sha256()
    h.update(getattr(tf, "__qualname__", type(tf).__qualname__).encode())
    cells = getattr(tf, "__closure__", None)
    if cells:
        for c in cells:
            _hash_value(h, c.cell_contents)
    else:
        h.update(repr(tf).encode())
    return h.hexdigest()


def identity(teacher: Teacher | None, data: DataSplits, teacher_hash: str | None = None) -> dict[str, Any]:
    """The manifest fields that say whose outputs on which inputs a cache holds. With no teacher
    (and no ``teacher_hash``) the teacher fields are None and are not checked."""
    aug, s = data.augment, data.train
    th = teacher_hash or (None if teacher is None else teacher_fingerprint(teacher))
    return {"teacher": th, "teacher_transform": None if teacher is None else transform_fingerprint(teacher),
            "data": data.fingerprint(), "dataset": data.name,
            "augment": None if aug is None else {"pad": aug.pad, "flip": aug.flip, **(
                {"mix": aug.mix, "mix_alpha": aug.mix_alpha} if aug.mix != "none" else {})},
            "transform": {"mean": [round(float(v), 6) for v in s.mean.reshape(-1)],
                          "std": [round(float(v), 6) for v in s.std.reshape(-1)], "scale": s.scale}}


def mismatches(manifest: dict[str, Any], ident: dict[str, Any], *, views: int | None = None, k: int | None = None,
               dtype: str | None = None, features: Sequence[str] = (), exact: bool = False) -> list[str]:
    """Why a cache does not serve a run, in words (empty when it does).

    ``ident`` (from :func:`identity`) must match; the layout arguments are checked only when
    given (None accepts what the cache holds), and the cache must hold at least ``features``.
    ``exact``: the layout must be exactly the one given (``k=None``: full logits; the same features).
    """
    out = []
    if ident["teacher"] is not None:
        if manifest.get("teacher") != ident["teacher"]:
            out.append("teacher weights changed")
        elif manifest.get("teacher_transform") != ident["teacher_transform"]:
            out.append("the teacher's input transform changed")
    if manifest.get("data") != ident["data"]:
        out.append("training data changed (the train/val split follows the run's seed unless data.split_seed is "
                   "set: set it to share one cache across seeds)")
    if manifest.get("augment") != ident["augment"]:
        out.append(f"augmentation changed ({manifest.get('augment')} → {ident['augment']})")
    if manifest.get("transform") != ident["transform"]:
        out.append("input normalisation changed")
    if views is not None and manifest.get("views") != views:
        out.append(f"views {manifest.get('views')} → {views}")
    if (k is not None or exact) and manifest.get("k") != k:
        out.append(f"top-k {manifest.get('k') or 'none (full logits)'} → {k}")
    if dtype is not None and manifest.get("dtype") != dtype:
        out.append(f"dtype {manifest.get('dtype')} → {dtype}")
    have = set(manifest.get("features") or [])
    missing = sorted(set(features) - have)
    if missing:
        out.append(f"features {missing} not stored")
    elif exact and have != set(features):
        out.append(f"features {sorted(have)} → {sorted(features)}")
    return out


# ---------------------------------------------------------------- top-k

def topk_encode(logits: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """``[B, C]`` logits → (top-k log-probabilities ``[B, k]``, class ids ``[B, k]``,
    log of the remaining probability mass ``[B, 1]``), all computed in fp32."""
    logp = torch.log_softmax(logits.float(), dim=1)
    values, idx = logp.topk(k, dim=1)
    C = logits.shape[1]
    if k >= C:
        tail = torch.full_like(values[:, :1], float("-inf"))
    else:
        rest = logp.scatter(1, idx, float("-inf"))
        tail = torch.logsumexp(rest, dim=1, keepdim=True)
    return values, idx, tail


# ---------------------------------------------------------------- building

def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_cache(teacher: Teacher, data: DataSplits, out: str | Path, *, views: int | None = None, k: int | None = None,
                dtype: str = "float32", features: Sequence[str] = (), batch_size: int = 512, seed: int = 0,
                teacher_hash: str | None = None, accelerate: str = "auto",
                log: Callable[[str], None] | None = _stderr) -> Path:
    """Run ``teacher`` once over every ``(index, view)`` of ``data.train`` and store its outputs.

    views:   augmented views per sample; required when ``data`` has augmentation (the student then
             trains on view ``epoch % views``), 1 without.
    k:       store top-k log-probabilities instead of full logits (see the module docstring).
    dtype:   ``float32`` or ``float16`` for logits / values / features.
    features: teacher feature names to store as well (e.g. ``pooled``, ``layer3``).
    accelerate: ``auto`` | ``eager`` | ``onnx`` | ``fold_bn``: how to run a module teacher; any
             accelerated pass is checked against the eager teacher first and dropped if it
             disagrees (see :mod:`kdlab.teachers.accelerate`).
    Written atomically: an existing cache at ``out`` is replaced only once the new one is complete.
    """
    from kdlab.teachers.accelerate import accelerated

    log = log or (lambda _m: None)
    if views is None:
        if data.augment is not None:
            raise ConfigError(AUGMENT_NEEDS_VIEWS)
        views = 1
    if dtype not in DTYPES:
        raise ConfigError(f"cache dtype must be one of {DTYPES}, got {dtype!r}")
    if views < 1:
        raise ConfigError(f"cache views must be >= 1, got {views}")
    if data.augment is None and views != 1:
        raise ConfigError(f"{views} cache views asked for but augmentation is off for {data.name!r}: every view "
                          f"would be the same input; use views=1")
    if k is not None and k < 1:
        raise ConfigError(f"cache top-k must be >= 1, got {k}")
    t0 = time.perf_counter()
    info = identity(teacher, data, teacher_hash)
    info.update(views=views, kind="logits" if k is None else "topk", k=k, dtype=dtype, features=list(features))
    split = data.train
    N = len(split)
    loader = Loader(split, batch_size, shuffle=False, seed=seed, augment=data.augment)
    loader.views = views
    first = next(iter(loader))
    run, mode = accelerated(teacher, first, accelerate, features=features, log=log)
    sample = run(first)
    C = int(sample.logits.shape[1])
    if sample.logits.dim() != 2:
        raise ConfigError(f"cache: teacher logits must be [B, C], got {tuple(sample.logits.shape)}")
    missing = [f for f in features if f not in sample.features]
    if missing:
        raise ConfigError(f"cache: teacher has no feature(s) {missing}; it has {sorted(sample.features)}")
    if k is not None and k > C:
        raise ConfigError(f"cache top-k {k} > number of classes {C}")
    specs = [ArraySpec("logits", (C,), dtype)] if k is None else [
        ArraySpec("topk_values", (k,), dtype), ArraySpec("topk_indices", (k,), "int16" if C < 2**15 else "int32"),
        ArraySpec("topk_tail", (1,), "float32")]
    specs += [ArraySpec(f"feat.{f}", tuple(sample.features[f].shape[1:]), dtype) for f in features]
    info.update(num_classes=C, seed=seed, built_with=mode, batch_size=batch_size,
                created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    log(f"building teacher cache {out}: {N} samples x {views} view{'s' if views > 1 else ''}, "
        f"{'full logits' if k is None else f'top-{k}'} {dtype}"
        f"{', features ' + ', '.join(features) if features else ''} "
        f"(teacher: {mode})")
    with StoreWriter(out, N, views, specs, info) as w:
        for v in range(views):
            loader.set_epoch(v)
            for batch in loader:
                o = run(batch)
                arrays: dict[str, np.ndarray] = {}
                if k is None:
                    arrays["logits"] = o.logits.float().cpu().numpy()
                else:
                    vals, idx, tail = topk_encode(o.logits, k)
                    arrays.update(topk_values=vals.cpu().numpy(), topk_indices=idx.cpu().numpy(),
                                  topk_tail=tail.cpu().numpy())
                for f in features:
                    arrays[f"feat.{f}"] = o.features[f].float().cpu().numpy()
                assert batch.index is not None and batch.view is not None  # the loader always sets them
                w.write(batch.index.numpy(), batch.view.numpy(), arrays)
        w.info["build_seconds"] = round(time.perf_counter() - t0, 3)
        path = w.commit()
    log(f"teacher cache {out} written in {time.perf_counter() - t0:.1f}s")
    return path


def ensure_cache(path: str | Path, teacher: Teacher | None, data: DataSplits, *, views: int | None = None,
                 k: int | None = None, dtype: str | None = None, features: Sequence[str] = (),
                 batch_size: int = 512, seed: int = 0, rebuild: bool = True, verify: bool = True,
                 accelerate: str = "auto", max_resident: int | None = 256 << 20, exact: bool = False,
                 log: Callable[[str], None] | None = _stderr) -> CachedTeacher:
    """A CachedTeacher for ``teacher`` on ``data``: reuse a matching cache at ``path``, build a
    missing one, rebuild a stale one (saying why), refuse a corrupt one (CheckpointError).

    Layout arguments left at None accept what an existing cache holds; a new cache gets full
    float32 logits (and needs ``views`` when ``data`` has augmentation). With ``teacher=None`` an
    existing cache is used after checking it was built for this data (nothing can be rebuilt).
    ``exact``: the cache must have exactly this layout (None: full logits, float32, 1 view).
    """
    log = log or (lambda _m: None)
    path = Path(path)
    ident = identity(teacher, data)
    if exact:
        dtype = dtype or "float32"
        views = views or (None if data.augment is not None else 1)
    layout: dict[str, Any] = dict(views=views, k=k, dtype=dtype, features=features, exact=exact)

    def build(reason: str) -> CachedTeacher:
        if teacher is None:
            raise CheckpointError(f"teacher cache {path} " + ("not found" if reason == "not found" else
                                  f"does not match this run ({reason})") + ", and there is no teacher to build it "
                                  "(set teacher.checkpoint)")
        if views is None and data.augment is not None:
            raise ConfigError(AUGMENT_NEEDS_VIEWS + ("" if reason == "not found" else
                              f" (the cache at {path} cannot be used: {reason})"))
        if reason != "not found":
            log(f"teacher cache {path} is stale ({reason}): rebuilding")
        build_cache(teacher, data, path, views=views, k=k, dtype=dtype or "float32", features=features,
                    batch_size=batch_size, seed=seed, teacher_hash=ident["teacher"], accelerate=accelerate, log=log)
        return CachedTeacher(path, verify=False, max_resident=max_resident, built=True)

    if not (path / MANIFEST).exists():
        return build("not found")
    manifest = read_manifest(path)  # a corrupt manifest is refused, never silently replaced
    why = mismatches(manifest, ident, **layout)
    if why:
        if not rebuild:
            raise CheckpointError(f"teacher cache {path} does not match this run ({'; '.join(why)})")
        return build("; ".join(why))
    return CachedTeacher(path, verify=verify, max_resident=max_resident)


def cache_for_run(spec: CacheSpec, data: DataSplits, teacher: Teacher | None, *, batch_size: int,
                  eval_batch_size: int = 512, seed: int = 0,
                  log: Callable[[str], None] | None = _stderr) -> tuple[CachedTeacher, Loader]:
    """The cached teacher and the student's loader (global ``batch_size``, seeded like fit's own
    loader) for a run with a ``cache:`` section: builds, reuses or rebuilds the cache as needed."""
    views = spec.views
    if data.augment is not None and data.augment.teacher_view != "same":
        raise ConfigError(f"data.teacher_view={data.augment.teacher_view} needs a live teacher: a cache holds the "
                          "teacher's answer to the student's own view; drop the cache section or use "
                          "data.teacher_view=same")
    if data.augment is None and views is not None and views > 1:
        if log:
            log(f"cache.views={views} ignored: augmentation is off, so every view is the same input")
        views = 1
    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    if world > 1 and rank != 0:
        torch.distributed.barrier()  # rank 0 checks, builds or rebuilds the cache first
    ct = ensure_cache(spec.dir, teacher, data, views=views, k=spec.topk, dtype=spec.dtype,
                      features=spec.features, batch_size=max(256, eval_batch_size),
                      log=log if rank == 0 else None, verify=rank == 0)
    if world > 1 and rank == 0:
        torch.distributed.barrier()
    # like fit's own loader: the batch size is the global batch, each rank reads its share
    return ct, cache_loader(data, ct, batch_size // world, seed=seed, rank=rank, world_size=world)
