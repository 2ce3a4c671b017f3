"""Data sources reading files from disk: CIFAR pickles, image folders, .npz archives, CSV files.

Every fixture file is written in the format the real files use; every bad input must end in a
one-line DataError that names the file, never a raw exception from numpy/pickle/PIL.
"""
from __future__ import annotations

import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from kdlab.data import DATASETS, Augment, load_data
from kdlab.data.cifar import load_pickle
from kdlab.errors import ConfigError, DataError

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover
    from numpy.core.multiarray import _reconstruct

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch):
    monkeypatch.delenv("KDLAB_DATA", raising=False)


def raw(name: str, **kw):
    return DATASETS.get(name)(**kw)


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


# --------------------------------------------------------------------------------------------
# CIFAR: the official files are Python 2 cPickle dumps (protocol 2) of dicts whose keys and
# strings are py2 ``str`` (SHORT_BINSTRING/BINSTRING opcodes, read back as bytes with
# ``encoding="bytes"``) and whose ``data`` is a numpy array pickled through
# ``numpy.core.multiarray._reconstruct``. This pickler writes exactly that.


class Py2Pickler(pickle._Pickler):
    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, f):
        super().__init__(f, protocol=2)

    def save_py2_str(self, obj):
        b = obj.encode("utf-8") if isinstance(obj, str) else obj
        if len(b) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(b)]) + b)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(b)) + b)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str

    _GLOBALS = {id(_reconstruct): b"numpy.core.multiarray\n_reconstruct\n",
                id(np.ndarray): b"numpy\nndarray\n", id(np.dtype): b"numpy\ndtype\n"}

    def save_global(self, obj, name=None):
        if id(obj) in self._GLOBALS:
            self.write(pickle.GLOBAL + self._GLOBALS[id(obj)])
            self.memoize(obj)
        else:
            super().save_global(obj, name)

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            assert obj.dtype == np.uint8
            return _reconstruct, (np.ndarray, (0,), "b"), (1, obj.shape, obj.dtype, False, obj.tobytes())
        if isinstance(obj, np.dtype):
            return np.dtype, ("u1", 0, 1), (3, "|", None, None, None, -1, -1, 0)
        return NotImplemented


def py2_dump(obj, path: Path) -> None:
    buf = io.BytesIO()
    Py2Pickler(buf).dump(obj)
    path.write_bytes(buf.getvalue())


def write_cifar10(d: Path, n: int = 4, n_test: int = 3, seed: int = 0) -> dict:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {"x": [], "y": []}
    for i in range(1, 6):
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, n)]
        py2_dump({"batch_label": f"training batch {i} of 5", "labels": y, "data": x,
                  "filenames": [f"img_{i}_{j}.png" for j in range(n)]}, d / f"data_batch_{i}")
        out["x"].append(x)
        out["y"] += y
    tx = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    ty = [int(v) for v in rng.integers(0, 10, n_test)]
    py2_dump({"batch_label": "testing batch 1 of 1", "labels": ty, "data": tx,
              "filenames": [f"test_{j}.png" for j in range(n_test)]}, d / "test_batch")
    py2_dump({"num_cases_per_batch": n, "label_names": CIFAR10_NAMES, "num_vis": 3072}, d / "batches.meta")
    return {"x": np.concatenate(out["x"]), "y": out["y"], "tx": tx, "ty": ty}


def write_cifar100(d: Path, n: int = 6, n_test: int = 4) -> dict:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    ref = {}
    for split, m in (("train", n), ("test", n_test)):
        x = rng.integers(0, 256, (m, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, m)]
        coarse = [f // 5 for f in fine]
        py2_dump({"filenames": [f"{split}_{j}.png" for j in range(m)], "batch_label": f"{split} batch",
                  "fine_labels": fine, "coarse_labels": coarse, "data": x}, d / split)
        ref[split] = (x, fine, coarse)
    py2_dump({"fine_label_names": [f"fine{i:02d}" for i in range(100)],
              "coarse_label_names": [f"coarse{i:02d}" for i in range(20)]}, d / "meta")
    return ref


def test_py2_pickler_writes_the_official_layout(tmp_path):
    ref = write_cifar10(tmp_path / "cifar-10-batches-py")
    blob = (tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    assert blob.startswith(b"\x80\x02}")
    assert b"U\x04data" in blob and b"cnumpy.core.multiarray\n_reconstruct\n" in blob
    assert b"_codecs" not in blob and b"X\x04\x00\x00\x00data" not in blob  # no py3 unicode/bytes encoding
    # the loading recipe published with the dataset reads it
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as fo:
        d = pickle.load(fo, encoding="bytes")
    assert set(d) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert np.array_equal(d[b"data"], ref["x"][:4]) and d[b"labels"] == ref["y"][:4]


def test_cifar10_reads_official_batches(tmp_path):
    ref = write_cifar10(tmp_path / "cifar-10-batches-py")
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):
        r = raw("cifar10", root=str(root))
        assert r.train_x.dtype == torch.uint8 and r.train_x.shape == (20, 3, 32, 32)
        assert r.test_x.shape == (3, 3, 32, 32)
        assert r.train_y.dtype == torch.int64 and r.train_y.tolist() == ref["y"]
        assert r.test_y.tolist() == ref["ty"]
        assert r.classes == CIFAR10_NAMES
        assert r.augment is True and r.pad == 4
        # row layout: 1024 red, then 1024 green, then 1024 blue values, each row-major 32x32
        assert torch.equal(r.train_x[0, 1], torch.from_numpy(ref["x"][0, 1024:2048].reshape(32, 32)))
        assert torch.equal(r.test_x, torch.from_numpy(ref["tx"].reshape(-1, 3, 32, 32)))


def test_cifar10_through_load_data(tmp_path):
    ref = write_cifar10(tmp_path / "cifar-10-batches-py")
    s = load_data("cifar10", root=str(tmp_path), val_fraction=0.1, split_seed=3)
    assert len(s.train) + len(s.val) == 20 and len(s.val) == 2 and len(s.test) == 3
    assert s.input_shape == (3, 32, 32) and s.num_classes == 10 and s.classes == CIFAR10_NAMES
    assert s.train.x.dtype == torch.uint8 and s.train.scale == pytest.approx(1 / 255)
    assert s.augment == Augment(pad=4, flip=True)
    assert sorted(s.train.y.tolist() + s.val.y.tolist()) == sorted(ref["y"])


def test_cifar10_from_env(tmp_path, monkeypatch):
    write_cifar10(tmp_path / "cifar-10-batches-py")
    monkeypatch.setenv("KDLAB_DATA", str(tmp_path))
    assert raw("cifar10").train_x.shape[0] == 20


def test_cifar10_accepts_python3_resaved_batches(tmp_path):
    d = tmp_path / "c10"
    write_cifar10(d)
    for name in ["data_batch_2", "batches.meta"]:  # re-saved with str keys, protocol 4
        obj = load_pickle(d / name)
        (d / name).write_bytes(pickle.dumps(obj, protocol=4))
    assert raw("cifar10", root=str(d)).train_x.shape == (20, 3, 32, 32)


def test_cifar100_fine_and_coarse(tmp_path):
    ref = write_cifar100(tmp_path / "cifar-100-python")
    r = raw("cifar100", root=str(tmp_path))
    assert r.train_x.shape == (6, 3, 32, 32) and r.test_x.shape == (4, 3, 32, 32)
    assert r.train_x.dtype == torch.uint8
    assert len(r.classes) == 100 and r.classes[7] == "fine07"
    assert r.train_y.tolist() == ref["train"][1] and r.test_y.tolist() == ref["test"][1]
    c = raw("cifar100", root=str(tmp_path / "cifar-100-python"), coarse=True)
    assert len(c.classes) == 20 and c.train_y.tolist() == ref["train"][2]
    s = load_data("cifar100", root=str(tmp_path), val_fraction=0.0)
    assert s.num_classes == 100 and len(s.train) == 6 and len(s.test) == 4
    with pytest.raises(ConfigError):
        raw("cifar100", root=str(tmp_path), coarse="yes")


def test_cifar_missing_dir(tmp_path):
    with pytest.raises(DataError) as e:
        load_data("cifar10", root=str(tmp_path / "nowhere"))
    assert "nowhere" in one_line(e) and "does not exist" in str(e.value)
    with pytest.raises(DataError) as e:
        raw("cifar100", root=str(tmp_path))
    assert str(tmp_path) in one_line(e) and "cifar-100-python" in str(e.value)
    with pytest.raises(DataError, match="KDLAB_DATA"):
        raw("cifar10")


def test_cifar_tarball_hint(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(DataError, match="extract"):
        raw("cifar10", root=str(tmp_path))


def test_cifar_missing_batch_file(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    write_cifar10(d)
    (d / "test_batch").unlink()
    with pytest.raises(DataError) as e:
        raw("cifar10", root=str(tmp_path))
    assert str(d / "test_batch") in one_line(e)


@pytest.mark.parametrize("cut", [0, 1, 40, 0.5, -1])
def test_cifar_truncated_pickle(tmp_path, cut):
    d = tmp_path / "cifar-10-batches-py"
    write_cifar10(d)
    p = d / "data_batch_3"
    blob = p.read_bytes()
    n = int(len(blob) * cut) if isinstance(cut, float) else (len(blob) + cut if cut < 0 else cut)
    p.write_bytes(blob[:n])
    with pytest.raises(DataError) as e:
        raw("cifar10", root=str(d))
    assert "data_batch_3" in one_line(e)


def test_cifar_not_a_pickle(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    write_cifar10(d)
    (d / "batches.meta").write_text("label_names: [cat, dog]\n")
    with pytest.raises(DataError) as e:
        raw("cifar10", root=str(d))
    assert "batches.meta" in one_line(e)


@pytest.mark.parametrize("change, match", [
    (lambda b: b.pop("data"), "missing key 'data'"),
    (lambda b: b.update(data=np.zeros((4, 100), np.uint8)), r"\[N, 3072\]"),
    (lambda b: b.update(data=[1, 2, 3]), "uint8 array"),
    (lambda b: b.update(labels=[0, 1, 2]), "4 images but 3 labels"),
    (lambda b: b.update(labels=[0, 1, 2, 10]), r"\[0, 9\]"),
    (lambda b: b.update(labels=[0, 1, 2, -1]), r"\[0, 9\]"),
    (lambda b: b.update(labels=["a", "b", "c", "d"]), "integers"),
])
def test_cifar_malformed_batch(tmp_path, change, match):
    d = tmp_path / "cifar-10-batches-py"
    write_cifar10(d)
    batch = {k.decode(): v for k, v in pickle.loads((d / "data_batch_2").read_bytes(), encoding="bytes").items()}
    change(batch)
    py2_dump(batch, d / "data_batch_2")
    with pytest.raises(DataError, match=match) as e:
        raw("cifar10", root=str(d))
    assert "data_batch_2" in one_line(e)


class _OpenFile:
    """Unpickling this calls open(path, "w"): it creates a file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


class _NumpySave:
    """A global from the numpy package that is not one of the array-rebuilding ones."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return np.save, (self.path, np.zeros(1))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    # the payload is real: a plain unpickler creates the file
    control = tmp_path / "control.txt"
    pickle.loads(pickle.dumps(_OpenFile(control))).close()
    assert control.exists()

    d = tmp_path / "cifar-10-batches-py"
    write_cifar10(d)
    target = tmp_path / "pwned.txt"
    (d / "data_batch_1").write_bytes(pickle.dumps({"data": _OpenFile(target), "labels": [0]}, protocol=2))
    with pytest.raises(DataError) as e:
        raw("cifar10", root=str(d))
    assert "data_batch_1" in one_line(e) and "refusing" in str(e.value) and "open" in str(e.value)
    assert not target.exists()

    # also as the top-level object, and in the meta file
    (d / "batches.meta").write_bytes(pickle.dumps(_OpenFile(target)))
    with pytest.raises(DataError, match="refusing"):
        raw("cifar10", root=str(d))
    assert not target.exists()


def test_non_array_numpy_globals_are_refused(tmp_path):
    d = tmp_path / "cifar-100-python"
    write_cifar100(d)
    target = tmp_path / "written"
    (d / "train").write_bytes(pickle.dumps({"data": _NumpySave(target)}, protocol=2))
    with pytest.raises(DataError, match="refusing") as e:
        raw("cifar100", root=str(d))
    assert "train" in one_line(e)
    assert not any(tmp_path.glob("written*"))
    # a GLOBAL opcode naming an unlisted function of an allowed module
    (d / "train").write_bytes(b"\x80\x02cnumpy.core.multiarray\nfromfile\nq\x00.")
    with pytest.raises(DataError, match="numpy.core.multiarray.fromfile"):
        raw("cifar100", root=str(d))


# --------------------------------------------------------------------------------------------
# image folders


def _png(path: Path, size=(10, 12), color=(255, 0, 0), mode="RGB", fmt=None):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, format=fmt)


def make_folder(root: Path, counts: dict[str, int]):
    colors = {"cat": (255, 0, 0), "dog": (0, 255, 0), "bird": (0, 0, 255)}
    for cls, n in counts.items():
        for i in range(n):
            _png(root / cls / f"{i}.png", size=(10 + i, 12), color=colors.get(cls, (9, 9, 9)))


def test_imagefolder_classes_shapes_and_pixels(tmp_path):
    make_folder(tmp_path, {"dog": 2, "cat": 3, "bird": 1})
    _png(tmp_path / "cat" / "sub" / "deep.jpg", color=(255, 0, 0), fmt="JPEG")
    (tmp_path / "cat" / "README.txt").write_text("not an image")
    (tmp_path / "dog" / ".hidden.png").write_bytes(b"junk")
    (tmp_path / "notes.txt").write_text("top-level files are ignored")
    r = raw("imagefolder", root=str(tmp_path), image_size=16)
    assert r.classes == ["bird", "cat", "dog"]
    assert r.train_x.dtype == torch.uint8 and r.train_x.shape == (7, 3, 16, 16)
    assert sorted(r.train_y.tolist()) == [0, 1, 1, 1, 1, 2, 2]
    assert r.test_x is None and r.augment
    bird = r.train_x[r.train_y == 0][0]
    assert bird[2].min() == 255 and bird[:2].max() == 0  # pure blue survives the resize
    g = raw("imagefolder", root=str(tmp_path), image_size=8, grayscale=True)
    assert g.train_x.shape == (7, 1, 8, 8)
    s = load_data("imagefolder", root=str(tmp_path), val_fraction=0.2, image_size=16)
    assert len(s.train) + len(s.val) + len(s.test) == 7 and s.input_shape == (3, 16, 16)


def test_imagefolder_converts_modes(tmp_path):
    _png(tmp_path / "a" / "gray.png", mode="L", color=128)
    _png(tmp_path / "a" / "rgba.png", mode="RGBA", color=(1, 2, 3, 4))
    _png(tmp_path / "b" / "pal.png", mode="P", color=3)
    r = raw("imagefolder", root=str(tmp_path), image_size=4)
    assert r.train_x.shape == (3, 3, 4, 4)
    assert r.train_x[0].flatten().unique().tolist() == [128]


def test_imagefolder_train_test_layout(tmp_path):
    make_folder(tmp_path / "train", {"cat": 3, "dog": 2})
    make_folder(tmp_path / "test", {"dog": 1})
    r = raw("imagefolder", root=str(tmp_path))
    assert r.classes == ["cat", "dog"] and r.train_x.shape == (5, 3, 32, 32)
    assert r.test_x.shape == (1, 3, 32, 32) and r.test_y.tolist() == [1]
    s = load_data("imagefolder", root=str(tmp_path), val_fraction=0.2)
    assert len(s.test) == 1 and len(s.train) == 4
    make_folder(tmp_path / "test", {"cow": 1})
    with pytest.raises(DataError, match="cow") as e:
        raw("imagefolder", root=str(tmp_path))
    one_line(e)


def test_imagefolder_train_only_layout(tmp_path):
    make_folder(tmp_path / "train", {"cat": 2, "dog": 2})
    r = raw("imagefolder", root=str(tmp_path))
    assert r.classes == ["cat", "dog"] and r.test_x is None


@pytest.mark.parametrize("content", [b"", b"not a png at all", None])
def test_imagefolder_unreadable_image(tmp_path, content):
    make_folder(tmp_path, {"cat": 2, "dog": 1})
    bad = tmp_path / "dog" / "broken.png"
    if content is None:  # a real PNG cut short
        _png(bad, size=(64, 64))
        blob = bad.read_bytes()
        bad.write_bytes(blob[: len(blob) // 2])
    else:
        bad.write_bytes(content)
    with pytest.raises(DataError) as e:
        raw("imagefolder", root=str(tmp_path))
    assert str(bad) in one_line(e)


def test_imagefolder_empty_and_missing(tmp_path):
    with pytest.raises(DataError, match="empty") as e:
        raw("imagefolder", root=str(tmp_path))
    one_line(e)
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no images") as e:
        raw("imagefolder", root=str(tmp_path))
    assert str(tmp_path / "cat") in one_line(e)
    with pytest.raises(DataError, match="does not exist"):
        raw("imagefolder", root=str(tmp_path / "missing"))
    with pytest.raises(DataError):
        raw("imagefolder")
    make_folder(tmp_path / "train", {"cat": 1})
    (tmp_path / "cat").rename(tmp_path / "test")
    (tmp_path / "test" / "notes.txt").unlink()
    with pytest.raises(DataError, match="test") as e:  # empty test/ folder
        raw("imagefolder", root=str(tmp_path))
    one_line(e)
    with pytest.raises(ConfigError):
        raw("imagefolder", root=str(tmp_path), image_size=0)


# --------------------------------------------------------------------------------------------
# .npz


def _npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def test_npz_vectors(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 5))
    y = rng.integers(0, 3, 30)
    f = _npz(tmp_path / "d.npz", x=x, y=y)
    r = raw("npz", root=f)
    assert r.train_x.dtype == torch.float32 and r.train_x.shape == (30, 5)
    assert r.train_y.dtype == torch.int64 and r.train_y.tolist() == y.tolist()
    assert r.classes == ["0", "1", "2"] and r.test_x is None
    s = load_data("npz", root=f, augment=True)
    assert s.input_shape == (5,) and s.augment is None
    assert len(s.train) + len(s.val) + len(s.test) == 30


def test_npz_image_layouts(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (6, 3, 8, 8), dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    r = raw("npz", root=_npz(tmp_path / "hw.npz", x=imgs[:, 0], y=y))
    assert r.train_x.shape == (6, 1, 8, 8) and r.train_x.dtype == torch.uint8
    r = raw("npz", root=_npz(tmp_path / "chw.npz", x=imgs, y=y))
    assert torch.equal(r.train_x, torch.from_numpy(imgs))
    hwc = imgs.transpose(0, 2, 3, 1)
    r = raw("npz", root=_npz(tmp_path / "hwc.npz", x=hwc, y=y), channels_last=True)
    assert torch.equal(r.train_x, torch.from_numpy(imgs))
    big = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(DataError, match="channels_last"):
        raw("npz", root=_npz(tmp_path / "big.npz", x=big, y=np.array([0, 1])))


def test_npz_test_split_classes_and_path_option(tmp_path):
    x = np.ones((4, 2, 3), np.float64)
    f = _npz(tmp_path / "d.npz", x=x, y=np.array([0, 1, 0, 1]), x_test=x[:2], y_test=np.array([2, 0]),
             classes=np.array(["ant", "bee", "cow"]))
    r = raw("npz", path=f)
    assert r.classes == ["ant", "bee", "cow"] and r.test_y.tolist() == [2, 0]
    assert r.train_x.shape == (4, 1, 2, 3) and r.test_x.shape == (2, 1, 2, 3)
    r = raw("npz", root=str(tmp_path), path="d.npz")  # relative path inside a root directory
    assert r.train_x.shape[0] == 4
    s = load_data("npz", root=str(tmp_path), path="d.npz", val_fraction=0.25)
    assert len(s.test) == 2 and len(s.val) == 1 and s.classes == ["ant", "bee", "cow"]


@pytest.mark.parametrize("arrays, match", [
    (dict(x=np.zeros((3, 2))), "missing array 'y'"),
    (dict(x=np.zeros(3), y=np.zeros(3, int)), r"\[N, D\]"),
    (dict(x=np.zeros((3, 2, 2, 2, 2)), y=np.zeros(3, int)), "shape"),
    (dict(x=np.zeros((0, 2)), y=np.zeros(0, int)), "no samples"),
    (dict(x=np.zeros((3, 2)), y=np.zeros(4, int)), "3 samples but 'y' has 4"),
    (dict(x=np.zeros((3, 2)), y=np.zeros(3)), "integer"),
    (dict(x=np.zeros((3, 2)), y=np.zeros((3, 2), int)), "1-D"),
    (dict(x=np.zeros((3, 2)), y=np.array([0, -1, 1])), "negative"),
    (dict(x=np.zeros((3, 2)), y=np.array([0, 1, 3]), classes=np.array(["a", "b"])), "label 3"),
    (dict(x=np.zeros((3, 2)), y=np.array([0, 1, 1]), x_test=np.zeros((2, 2)), y_test=np.array([0, 5]),
          classes=np.array(["a", "b"])), "'y_test' has label 5"),
    (dict(x=np.zeros((3, 2)), y=np.zeros(3, int), x_test=np.zeros((2, 2))), "together"),
    (dict(x=np.zeros((3, 2)), y=np.zeros(3, int), x_test=np.zeros((2, 3)), y_test=np.zeros(2, int)), "shape"),
    (dict(x=np.array([[np.nan, 1.0]]), y=np.zeros(1, int)), "NaN"),
    (dict(x=np.array([["a", "b"]]), y=np.zeros(1, int)), "numeric"),
    (dict(x=np.array([[1e39, 0.0]]), y=np.zeros(1, int)), "overflow"),
])
def test_npz_invalid(tmp_path, arrays, match):
    f = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=match) as e:
        raw("npz", root=f)
    assert "bad.npz" in one_line(e)


def test_npz_unreadable(tmp_path):
    obj = tmp_path / "obj.npz"
    np.savez(obj, x=np.array([{"a": 1}, None], dtype=object), y=np.zeros(2, int))
    with pytest.raises(DataError, match="object arrays") as e:
        raw("npz", root=str(obj))
    assert "obj.npz" in one_line(e)
    npy = tmp_path / "a.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(DataError, match="not an .npz"):
        raw("npz", root=str(npy))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(DataError, match="junk.npz") as e:
        raw("npz", root=str(junk))
    one_line(e)
    cut = tmp_path / "cut.npz"
    np.savez(cut, x=np.zeros((50, 50)), y=np.zeros(50, int))
    cut.write_bytes(cut.read_bytes()[:3000])
    with pytest.raises(DataError, match="cut.npz"):
        raw("npz", root=str(cut))
    # a member whose .npy header is fine but the data is cut short
    short = tmp_path / "short.npz"
    with zipfile.ZipFile(short, "w") as z:
        b = io.BytesIO()
        np.save(b, np.zeros((10, 10)))
        z.writestr("x.npy", b.getvalue()[:-100])
        b = io.BytesIO()
        np.save(b, np.zeros(10, int))
        z.writestr("y.npy", b.getvalue())
    with pytest.raises(DataError, match="short.npz") as e:
        raw("npz", root=str(short))
    one_line(e)
    with pytest.raises(DataError, match="does not exist"):
        raw("npz", root=str(tmp_path / "missing.npz"))
    with pytest.raises(DataError, match="directory"):
        raw("npz", root=str(tmp_path))
    with pytest.raises(DataError, match="no file"):
        raw("npz")


def test_npz_labels_out_of_range_via_load_data(tmp_path):
    f = _npz(tmp_path / "d.npz", x=np.zeros((4, 2)), y=np.array([0, 1, 1, 7]), classes=np.array(["a", "b"]))
    with pytest.raises(DataError, match="label 7"):
        load_data("npz", root=f)


# --------------------------------------------------------------------------------------------
# CSV


def test_csv_numeric_labels(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("a,b,label\n1,2,0\n3.5,-4,2\n\n5,6e1,1\n")
    r = raw("csv", root=str(f))
    assert r.train_x.dtype == torch.float32 and r.train_x.tolist() == [[1, 2], [3.5, -4], [5, 60]]
    assert r.train_y.tolist() == [0, 2, 1] and r.classes == ["0", "1", "2"]
    assert r.test_x is None and not r.augment


def test_csv_string_labels_and_label_column(tmp_path):
    f = tmp_path / "iris.csv"
    f.write_text("species;len;width\nvirginica;1;2\nsetosa;3;4\nversicolor;5;6\nsetosa;7;8\n")
    r = raw("csv", root=str(f), label_column="species", delimiter=";")
    assert r.classes == ["setosa", "versicolor", "virginica"]
    assert r.train_y.tolist() == [2, 0, 1, 0] and r.train_x.shape == (4, 2)
    s = load_data("csv", root=str(f), label_column="species", delimiter=";", val_fraction=0.25)
    assert s.num_classes == 3 and len(s.train) + len(s.val) + len(s.test) == 4


def test_csv_test_file(tmp_path):
    (tmp_path / "train.csv").write_text("x,label\n1,cat\n2,dog\n3,cat\n")
    (tmp_path / "test.csv").write_text("x,label\n4,dog\n")
    r = raw("csv", root=str(tmp_path), path="train.csv", test_path="test.csv")
    assert r.test_y.tolist() == [1] and r.test_x.tolist() == [[4.0]]
    (tmp_path / "test.csv").write_text("x,label\n4,cow\n")
    with pytest.raises(DataError, match="cow"):
        raw("csv", root=str(tmp_path), path="train.csv", test_path="test.csv")
    (tmp_path / "test.csv").write_text("y,label\n4,dog\n")
    with pytest.raises(DataError, match="differ"):
        raw("csv", root=str(tmp_path), path="train.csv", test_path="test.csv")


@pytest.mark.parametrize("text, match", [
    ("", "empty file"),
    ("a,b,label\n", "no data rows"),
    ("a,b,target\n1,2,0\n", "no label column 'label'"),
    ("1,2,3\n4,5,6\n", "no label column"),  # no header row
    ("label\n0\n1\n", "no feature columns"),
    ("a,b,label\n1,2,0\n1,2\n", "line 3: 2 fields"),
    ("a,b,label\n1,x,0\n", "line 2: column 'b' is not a number"),
    ("a,b,label\n1,,0\n", "column 'b' is not a number"),
    ("a,b,label\n1,nan,0\n", "not finite"),
    ("a,b,label\n1,2,\n", "empty label"),
    ("a,a,label\n1,2,0\n", "duplicate"),
    ("a,label\n1e39,0\n", "overflow"),
])
def test_csv_invalid(tmp_path, text, match):
    f = tmp_path / "bad.csv"
    f.write_text(text)
    with pytest.raises(DataError, match=match) as e:
        raw("csv", root=str(f))
    assert "bad.csv" in one_line(e)


def test_csv_unreadable(tmp_path):
    f = tmp_path / "bin.csv"
    f.write_bytes(b"a,label\n\xff\xfe\x00,1\n")
    with pytest.raises(DataError, match="UTF-8") as e:
        raw("csv", root=str(f))
    one_line(e)
    with pytest.raises(DataError, match="does not exist"):
        raw("csv", root=str(tmp_path / "nope.csv"))
    with pytest.raises(ConfigError):
        raw("csv", root=str(f), delimiter=";;")
