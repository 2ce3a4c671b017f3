"""Property-based tests: arbitrary input to the config loader and to every data reader gives either
a valid result or a KDLabError (the one-line user error), never another exception and never a hang.

Each property runs a bounded number of examples (derandomized, so CI runs are repeatable) with a
per-example deadline, and a hard alarm turns a hang into a failure. For a longer, randomized search:
``KDLAB_PROPERTY_SCALE=20 pytest tests/reliability/test_properties.py --hypothesis-show-statistics``.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import signal
import struct
import tempfile
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.extra import numpy as hnp

from kdlab.config import RunConfig, dump_config, load_config
from kdlab.data import DataSplits, load_data
from kdlab.data.cifar import load_pickle
from kdlab.data.fashion_mnist import read_idx
from kdlab.errors import KDLabError

HANG_S = 20  # an example running this long is a hang
SCALE = int(os.environ.get("KDLAB_PROPERTY_SCALE", "1"))


def props(n: int = 40):
    return settings(max_examples=n * SCALE, deadline=timedelta(seconds=5), derandomize=SCALE == 1, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Hang(Exception):
    pass


@contextmanager
def no_hang(seconds: int = HANG_S):
    def alarm(*_):
        raise Hang(f"no answer after {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def valid_or_user_error(fn, *args, **kwargs):
    """``fn(...)``'s result, or None when it raised a KDLabError with a one-line message."""
    with no_hang():
        try:
            out = fn(*args, **kwargs)
        except KDLabError as e:
            msg = str(e)
            assert msg and "\n" not in msg and "Traceback" not in msg, repr(msg)
            _event(f"{getattr(fn, '__name__', fn)}: {type(e).__name__}")
            return None
    _event(f"{getattr(fn, '__name__', fn)}: valid")
    return out


def _event(label: str) -> None:
    try:
        event(label)
    except InvalidArgument:  # outside a property
        pass


def check_splits(d: DataSplits) -> None:
    assert isinstance(d, DataSplits) and d.num_classes >= 1
    assert len(d.train) >= 2 and len(d.val) >= 1 and len(d.test) >= 1
    for s in (d.train, d.val, d.test):
        assert s.y is not None and s.y.dtype == torch.int64 and s.x.shape[0] == s.y.shape[0]
        assert int(s.y.min()) >= 0 and int(s.y.max()) < d.num_classes
        assert tuple(s.x.shape[1:]) == d.input_shape
    assert torch.isfinite(d.train.mean).all() and torch.isfinite(d.train.std).all()
    assert torch.isfinite(d.train.gather(torch.arange(min(len(d.train), 16)))).all()


# ---------------------------------------------------------------- config

KEYS = ["data", "name", "root", "val_fraction", "subset", "augment", "options", "student", "teacher", "checkpoint",
        "model", "weights", "methods", "train", "epochs", "batch_size", "optimizer", "lr", "momentum",
        "weight_decay", "lr_schedule", "milestones", "gamma", "grad_clip", "eval_batch_size", "seed", "out",
        "threads", "T", "weight", "0", "1"]
key = st.one_of(st.sampled_from(KEYS), st.text(max_size=8))
scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-3, 300),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                   st.sampled_from(["digits", "kd", "ce", "mlp_tiny", "sgd", "adamw", "cosine", "step", "1e-3"]))
tree = st.recursive(scalar, lambda ch: st.one_of(st.lists(ch, max_size=4), st.dictionaries(key, ch, max_size=5)),
                    max_leaves=20)
yaml_value = st.one_of(st.sampled_from(["1", "-1", "0", "0.5", "1e999", ".nan", "-.inf", "true", "null", "[1, 2]",
                                        "{a: 1}", "[", "{", "'x", "!!python/object:os.system", "2001-13-45", "~",
                                        "0x1F", "0o17", "1_000", "abc", "'12'", "!!binary aGVsbG8=", "*alias",
                                        "&a [*a]", "2002-12-14"]),
                       st.text(max_size=16))
override = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.lists(st.sampled_from(KEYS), min_size=1, max_size=3).map(".".join),
              yaml_value),
    st.text(max_size=24),
)


def _roundtrip(cfg: RunConfig) -> None:
    """A config that validated reproduces itself from its saved YAML (what a run directory keeps)."""
    again = load_config(base=yaml.safe_load(dump_config(cfg)))
    assert again == cfg


def _maybe(strategy, wild=scalar):
    """Mostly plausible values, sometimes anything."""
    return st.one_of(strategy, strategy, strategy, wild)


near_valid = st.fixed_dictionaries({}, optional={
    "data": st.fixed_dictionaries({}, optional={
        "name": _maybe(st.sampled_from(["digits", "npz", "csv", "cifar10"])),
        "val_fraction": _maybe(st.floats(0, 0.99)), "subset": _maybe(st.none() | st.integers(1, 5000)),
        "augment": _maybe(st.none() | st.booleans()), "options": _maybe(st.dictionaries(key, scalar, max_size=2))}),
    "student": st.fixed_dictionaries({}, optional={"name": _maybe(st.sampled_from(["mlp_tiny", "cnn_small"])),
                                                   "options": _maybe(st.dictionaries(key, tree, max_size=2))}),
    "teacher": _maybe(st.none() | st.fixed_dictionaries({}, optional={"checkpoint": _maybe(st.text(max_size=8))})),
    "methods": _maybe(st.lists(st.fixed_dictionaries({"name": _maybe(st.sampled_from(["ce", "kd", "dkd"]))},
                                                     optional={"T": _maybe(st.floats(0.5, 8)),
                                                               "weight": _maybe(st.floats(0, 1))}),
                               max_size=3)),
    "train": st.fixed_dictionaries({}, optional={
        "epochs": _maybe(st.integers(1, 300)), "batch_size": _maybe(st.integers(1, 512)),
        "optimizer": _maybe(st.sampled_from(["sgd", "adam", "adamw"])), "lr": _maybe(st.floats(1e-5, 1)),
        "momentum": _maybe(st.floats(0, 0.99)), "lr_schedule": _maybe(st.sampled_from(["cosine", "step", "constant"])),
        "milestones": _maybe(st.lists(st.integers(1, 300), max_size=3)),
        "grad_clip": _maybe(st.none() | st.floats(0.1, 10))}),
    "seed": _maybe(st.integers(0, 2**32 - 1)), "out": _maybe(st.none() | st.text(max_size=8)),
    "threads": _maybe(st.none() | st.integers(1, 8)),
})


@props(50)
@given(base=st.one_of(near_valid, near_valid, st.dictionaries(key, tree, max_size=6)),
       overrides=st.lists(override, max_size=4))
@example(base={}, overrides=["data=2001-13-45"])  # an impossible date once escaped the YAML loader
def test_config_from_arbitrary_dicts_and_overrides(base, overrides):
    cfg = valid_or_user_error(load_config, base=base, overrides=overrides)
    if cfg is not None:
        assert isinstance(cfg, RunConfig)
        _roundtrip(cfg)


@props(40)
@given(raw=st.one_of(st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
                     st.lists(st.builds(lambda k, v, ind: " " * ind + f"{k}: {v}", st.sampled_from(KEYS), yaml_value,
                                        st.integers(0, 4)), max_size=8).map(lambda rows: "\n".join(rows).encode()),
                     st.binary(max_size=200),
                     near_valid.map(lambda d: yaml.safe_dump(d, allow_unicode=True).encode())))
@example(raw=b"seed: 2001-13-45\n")
@example(raw=b"train:\n  lr: \xff\xfe\n")
def test_config_from_arbitrary_yaml_files(raw):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.yaml"
        p.write_bytes(raw)
        cfg = valid_or_user_error(load_config, p)
    if cfg is not None:
        _roundtrip(cfg)


# ---------------------------------------------------------------- IDX (Fashion-MNIST)

IDX_CODES = [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]


@st.composite
def idx_files(draw) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    code = draw(st.one_of(st.sampled_from(IDX_CODES), st.integers(0, 255)))
    ndim = draw(st.integers(0, 4))
    dims = draw(st.lists(st.one_of(st.integers(0, 6), st.integers(0, 6), st.integers(0, 2**32 - 1)), min_size=ndim,
                         max_size=ndim))
    head = bytes([0, 0, code, ndim]) + struct.pack(f">{ndim}I", *dims)
    width = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(code, 1)
    size = int(np.prod(dims, dtype=object)) * width if dims else width
    body = draw(st.one_of(st.binary(max_size=200), st.binary(min_size=min(size, 2000), max_size=min(size, 2000))))
    cut = draw(st.integers(0, len(head)))
    return (head + body) if draw(st.booleans()) else head[:cut]


@props(50)
@given(raw=idx_files(), gz=st.booleans())
def test_idx_reader(raw, gz):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / ("f.idx.gz" if gz else "f.idx")
        p.write_bytes(gzip.compress(raw) if gz and raw[:1] != b"\xff" else raw)
        arr = valid_or_user_error(read_idx, p)
    if arr is not None:
        assert isinstance(arr, np.ndarray)
        assert arr.ndim == raw[3] and list(arr.shape) == list(struct.unpack(f">{raw[3]}I", raw[4 : 4 + 4 * raw[3]]))


# ---------------------------------------------------------------- CIFAR pickles

pickleable = st.recursive(
    st.one_of(st.none(), st.integers(), st.text(max_size=6), st.binary(max_size=6), st.floats(),
              hnp.arrays(st.sampled_from([np.uint8, np.int64, np.float32]), hnp.array_shapes(max_dims=2, max_side=4))),
    lambda ch: st.one_of(st.lists(ch, max_size=4), st.dictionaries(st.one_of(st.text(max_size=6), st.binary(max_size=6),
                                                                              st.integers()), ch, max_size=4)),
    max_leaves=12)


def _batch(n: int, rng: np.random.Generator, classes: int = 10) -> dict:
    return {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": rng.integers(0, classes, n).tolist()}


@st.composite
def cifar_files(draw) -> bytes:
    kind = draw(st.sampled_from(["bytes", "object", "batch", "batch", "mutated"]))
    if kind == "bytes":
        return draw(st.binary(max_size=400))
    if kind == "object":
        return pickle.dumps(draw(pickleable), protocol=draw(st.integers(0, 5)))
    rng = np.random.default_rng(draw(st.integers(0, 100)))
    b = _batch(draw(st.integers(0, 4)), rng)
    if draw(st.integers(0, 3)) == 0:
        b[draw(st.sampled_from(["data", "labels", "extra"]))] = draw(pickleable)
    raw = pickle.dumps(b, protocol=draw(st.integers(2, 5)))
    if kind == "mutated" and raw:
        raw = bytearray(raw)
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(raw) - 1))
            raw[i] = draw(st.integers(0, 255))
        raw = bytes(raw[: draw(st.integers(0, len(raw)))])
    return raw


@props(50)
@given(raw=cifar_files(), which=st.sampled_from(["data_batch_1", "data_batch_3", "test_batch"]))
def test_cifar_reader(raw, which):
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        for i in range(1, 6):
            (root / f"data_batch_{i}").write_bytes(pickle.dumps(_batch(4, rng), protocol=4))
        (root / "test_batch").write_bytes(pickle.dumps(_batch(4, rng), protocol=4))
        (root / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}, protocol=4))
        (root / which).write_bytes(raw)
        obj = valid_or_user_error(load_pickle, root / which)
        if obj is not None:
            assert isinstance(obj, dict) and all(isinstance(k, str) for k in obj)
        d_ = valid_or_user_error(load_data, "cifar10", root=str(root), val_fraction=0.2)
    if d_ is not None:
        check_splits(d_)
        assert d_.input_shape == (3, 32, 32)


# ---------------------------------------------------------------- .npz

dtypes = st.sampled_from([np.uint8, np.int8, np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_,
                          np.complex64, "U3", "S2"])


@st.composite
def _plausible_npz(draw) -> dict:
    n = draw(st.integers(3, 16))
    k = draw(st.integers(1, 4))
    feat = tuple(draw(st.sampled_from([[4], [2, 3], [1, 3, 3], [3, 2, 2], [2, 2, 3]])))
    dt = draw(st.sampled_from([np.float32, np.float64, np.uint8, np.int16]))
    x = lambda m: draw(hnp.arrays(dt, (m, *feat), elements=st.integers(0, 200) if dt in (np.uint8, np.int16)
                                  else st.floats(-1e3, 1e3, width=32)))
    y = lambda m: draw(hnp.arrays(np.int64, m, elements=st.integers(0, k - 1)))
    arrays = {"x": x(n), "y": y(n)}
    if draw(st.integers(0, 5)) == 0:  # a label far beyond any plausible class count
        arrays["y"][0] = draw(st.integers(k, 2**62))
    if draw(st.booleans()):
        m = draw(st.integers(1, 6))
        arrays.update(x_test=x(m), y_test=y(m))
    if draw(st.booleans()):
        arrays["classes"] = np.array([f"c{i}" for i in range(k + draw(st.integers(0, 2)))])
    if draw(st.integers(0, 2)) == 0:  # break one array
        name = draw(st.sampled_from(sorted(arrays) + ["other"]))
        arrays[name] = draw(hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
                                       elements=None))
    return arrays


@st.composite
def npz_files(draw) -> bytes:
    kind = draw(st.sampled_from(["bytes", "arrays", "plausible", "plausible", "plausible", "mutated"]))
    if kind == "bytes":
        return draw(st.binary(max_size=400))
    if kind == "arrays":
        arrays = {}
        n = draw(st.integers(0, 12))
        for name in draw(st.lists(st.sampled_from(["x", "y", "x_test", "y_test", "classes", "other"]), unique=True,
                                  min_size=1, max_size=6)):
            if name in ("y", "y_test") and draw(st.booleans()):
                arrays[name] = draw(hnp.arrays(np.int64, n, elements=st.integers(-2, 12)))
            elif name in ("x", "x_test") and draw(st.booleans()):
                shape = (n, *draw(st.lists(st.integers(1, 4), max_size=3)))
                arrays[name] = draw(hnp.arrays(np.float32, shape, elements=st.floats(width=32)))
            else:
                arrays[name] = draw(hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0,
                                                                        max_side=5)))
    else:
        arrays = draw(_plausible_npz())
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    raw = buf.getvalue()
    if kind == "mutated":
        raw = bytearray(raw)
        for _ in range(draw(st.integers(1, 6))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        raw = bytes(raw[: draw(st.integers(len(raw) // 2, len(raw)))])
    return raw


@props(50)
@given(raw=npz_files(), channels_last=st.booleans())
def test_npz_reader(raw, channels_last):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "d.npz"
        p.write_bytes(raw)
        d_ = valid_or_user_error(load_data, "npz", root=str(p), val_fraction=0.2, channels_last=channels_last)
    if d_ is not None:
        check_splits(d_)


def test_npz_object_arrays_are_refused_without_unpickling(tmp_path):
    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "PWNED"), "w"))

    np.savez(tmp_path / "evil.npz", x=np.array([Payload()] * 4, dtype=object), y=np.zeros(4, np.int64))
    assert valid_or_user_error(load_data, "npz", root=str(tmp_path / "evil.npz")) is None
    assert not (tmp_path / "PWNED").exists()


# ---------------------------------------------------------------- CSV

cell = st.one_of(st.sampled_from(["0", "1", "2", "-1", "1.5", "1e3", "nan", "inf", "-inf", "1e400", "", " ", "a", "b",
                                  '"x,y"', "99999999999", "3.4e38", "0x10"]),
                 st.text(alphabet="0123456789.-e, \"\tab\n", max_size=6))


number = st.one_of(st.integers(-50, 50).map(str), st.floats(-1e3, 1e3).map(repr))


@st.composite
def csv_files(draw) -> bytes:
    kind = draw(st.sampled_from(["bytes", "text", "table", "plausible", "plausible", "plausible"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "text":
        return draw(st.text(max_size=300)).encode("utf-8", "surrogatepass")
    if kind == "table":
        ncol = draw(st.integers(1, 4))
        header = draw(st.lists(st.sampled_from(["a", "b", "c", "label", "", "a"]), min_size=ncol, max_size=ncol))
        rows = draw(st.lists(st.lists(cell, min_size=max(0, ncol - 1), max_size=ncol + 1), max_size=12))
    else:
        nfeat = draw(st.integers(1, 3))
        header = [f"f{i}" for i in range(nfeat)] + ["label"]
        labels = draw(st.sampled_from([["0", "1", "2"], ["cat", "dog"], ["1", "7"], ["a", "3"]]))
        rows = [[draw(number) for _ in range(nfeat)] + [draw(st.sampled_from(labels))]
                for _ in range(draw(st.integers(3, 14)))]
        for _ in range(draw(st.integers(0, 2))):  # a few stray cells
            r = draw(st.integers(0, len(rows) - 1))
            rows[r][draw(st.integers(0, nfeat))] = draw(cell)
    text = ",".join(header) + "\n" + "\n".join(",".join(r) for r in rows)
    return text.encode("utf-8", "surrogatepass")


@props(50)
@given(raw=csv_files(), delimiter=st.sampled_from([",", ",", ";", "\t"]))
def test_csv_reader(raw, delimiter):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "d.csv"
        p.write_bytes(raw)
        d_ = valid_or_user_error(load_data, "csv", root=str(p), val_fraction=0.2, delimiter=delimiter)
    if d_ is not None:
        check_splits(d_)


# ---------------------------------------------------------------- image folders


def _png(rng: np.random.Generator, size: int, mode: str) -> bytes:
    from PIL import Image

    shape = (size, size) if mode == "L" else (size, size, 3 if mode == "RGB" else 4)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(buf, format="PNG")
    return buf.getvalue()


@st.composite
def image_bytes(draw) -> bytes:
    kind = draw(st.sampled_from(["bytes", "valid", "valid", "valid", "mutated", "header"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    rng = np.random.default_rng(draw(st.integers(0, 50)))
    raw = _png(rng, draw(st.integers(1, 12)), draw(st.sampled_from(["L", "RGB", "RGBA"])))
    if kind == "header":
        return raw[:8] + draw(st.binary(max_size=80))
    if kind == "mutated":
        raw = bytearray(raw)
        for _ in range(draw(st.integers(1, 6))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        raw = bytes(raw[: draw(st.integers(0, len(raw)))])
    return raw


@props(40)
@given(images=st.one_of(
    st.lists(st.tuples(st.sampled_from(["cat", "dog", "cat", "dog", "train", ".hidden"]),
                       st.sampled_from([".png", ".png", ".jpg", ".gif", ".txt", ".PNG", ".webp"]),
                       image_bytes()), max_size=10),
    st.lists(st.tuples(st.sampled_from(["cat", "dog"]), st.just(".png"),
                       st.builds(lambda seed, size, mode: _png(np.random.default_rng(seed), size, mode),
                                 st.integers(0, 9), st.integers(1, 12), st.sampled_from(["L", "RGB", "RGBA"]))),
             min_size=4, max_size=10)),
       grayscale=st.booleans(), size=st.integers(1, 8))
def test_imagefolder_reader(images, grayscale, size):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        for i, (cls, ext, raw) in enumerate(images):
            (root / cls).mkdir(exist_ok=True)
            (root / cls / f"{i}{ext}").write_bytes(raw)
        d_ = valid_or_user_error(load_data, "imagefolder", root=str(root), val_fraction=0.2, image_size=size,
                                 grayscale=grayscale)
    if d_ is not None:
        check_splits(d_)
        assert d_.input_shape == (1 if grayscale else 3, size, size)
