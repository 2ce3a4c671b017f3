"""The in-memory data pipeline: IDX reading, seeded splits, normalisation, Loader, augmentation."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from kdlab.data import DATASETS, Augment, Loader, RawData, Split, fashion_mnist, load_data
from kdlab.data.augment import apply_params, augment, augment_params
from kdlab.data.fashion_mnist import read_idx
from kdlab.errors import DataError


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch):
    monkeypatch.delenv("KDLAB_DATA", raising=False)


def write_idx(path: Path, arr: np.ndarray) -> Path:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
             np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}
    blob = bytes([0, 0, codes[arr.dtype], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    if path.suffix == ".gz":
        blob = gzip.compress(blob)
    path.write_bytes(blob)
    return path


def write_fashion(d: Path, gz: bool, n: int = 30, n_test: int = 7) -> dict:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrs = {"train_x": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
            "train_y": rng.integers(0, 10, n).astype(np.uint8),
            "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            "test_y": rng.integers(0, 10, n_test).astype(np.uint8)}
    for k, stem in fashion_mnist.FILES.items():
        write_idx(d / (stem + (".gz" if gz else "")), arrs[k])
    return arrs


@pytest.fixture
def tiny(monkeypatch):
    """Registers a small synthetic image dataset ("tiny") for the duration of one test."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (50, 3, 6, 6), generator=g, dtype=torch.uint8)
    x[:, 1] //= 4  # channels with different statistics
    y = torch.arange(50) % 5

    def factory(root=None):
        return RawData(x.clone(), y.clone(), None, None, [f"c{i}" for i in range(5)], augment=True, pad=2)

    monkeypatch.setitem(DATASETS._items, "tiny", factory)
    return x, y


# ------------------------------------------------------------------------------- IDX / Fashion


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_idx(tmp_path, gz):
    arrs = write_fashion(tmp_path, gz)
    r = DATASETS.get("fashion-mnist")(root=str(tmp_path))
    assert r.train_x.shape == (30, 1, 28, 28) and r.train_x.dtype == torch.uint8
    assert torch.equal(r.train_x[:, 0], torch.from_numpy(arrs["train_x"]))
    assert r.train_y.dtype == torch.int64 and r.train_y.tolist() == arrs["train_y"].tolist()
    assert r.test_x.shape == (7, 1, 28, 28) and r.test_y.tolist() == arrs["test_y"].tolist()
    assert len(r.classes) == 10
    s = load_data("fashion-mnist", root=str(tmp_path), val_fraction=0.1)
    assert (len(s.train), len(s.val), len(s.test)) == (27, 3, 7)
    assert s.input_shape == (1, 28, 28) and s.augment is None


def test_read_idx_dtypes(tmp_path):
    a = (np.arange(12) - 5).astype(">i4").reshape(3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a.idx", a)), a)
    f = np.linspace(0, 1, 6, dtype=">f4").reshape(2, 3)
    assert np.array_equal(read_idx(write_idx(tmp_path / "f.idx.gz", f)), f)


def test_read_idx_bad_magic(tmp_path):
    p = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((2, 3, 3), np.uint8))
    blob = bytearray(p.read_bytes())
    blob[0] = 0x1F
    p.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="bad magic") as e:
        read_idx(p)
    assert str(p) in str(e.value)
    blob[0], blob[2] = 0, 0x42  # unknown type code
    p.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(p)
    p.write_bytes(b"")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(p)


def test_read_idx_truncated(tmp_path):
    p = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((4, 5, 5), np.uint8))
    blob = p.read_bytes()
    p.write_bytes(blob[:-7])
    with pytest.raises(DataError, match="holds") as e:
        read_idx(p)
    assert str(p) in str(e.value)
    p.write_bytes(blob[:9])  # cut inside the dimension header
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(p)
    gz = write_idx(tmp_path / "y-idx1-ubyte.gz", np.zeros(100, np.uint8))
    gz.write_bytes(gz.read_bytes()[:-12])  # truncated gzip stream
    with pytest.raises(DataError, match="y-idx1-ubyte.gz"):
        read_idx(gz)
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(gz)


def test_fashion_mnist_count_mismatch_and_missing(tmp_path, monkeypatch):
    write_fashion(tmp_path, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(29, np.uint8))
    with pytest.raises(DataError, match="differ in count"):
        load_data("fashion-mnist", root=str(tmp_path))
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", str(tmp_path / "no-debian"))
    with pytest.raises(DataError, match="not found") as e:
        load_data("fashion-mnist", root=str(tmp_path / "empty"))
    assert str(tmp_path / "empty") in str(e.value) and "\n" not in str(e.value)


DEBIAN = Path(fashion_mnist.DEBIAN_DIR)


@pytest.mark.skipif(not (DEBIAN / "train-images-idx3-ubyte.gz").exists()
                    and not (DEBIAN / "train-images-idx3-ubyte").exists(),
                    reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_debian_files():
    r = DATASETS.get("fashion-mnist")(root=str(DEBIAN))
    assert r.train_x.shape == (60000, 1, 28, 28) and r.test_x.shape == (10000, 1, 28, 28)
    assert r.train_x.dtype == torch.uint8
    assert torch.bincount(r.train_y).tolist() == [6000] * 10
    assert torch.bincount(r.test_y).tolist() == [1000] * 10


# ------------------------------------------------------------------------------- splits


def test_digits_loads():
    s = load_data("digits", val_fraction=0.1)
    assert len(s.train) + len(s.val) + len(s.test) == 1797
    assert s.num_classes == 10 and s.input_shape == (1, 8, 8)
    assert s.info.num_classes == 10 and s.info.num_train == len(s.train)


def test_seeded_splits(tiny):
    a = load_data("tiny", split_seed=1, val_fraction=0.2)
    b = load_data("tiny", split_seed=1, val_fraction=0.2)
    c = load_data("tiny", split_seed=2, val_fraction=0.2)
    for part in ("train", "val", "test"):
        assert torch.equal(getattr(a, part).x, getattr(b, part).x)
        assert torch.equal(getattr(a, part).y, getattr(b, part).y)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert not torch.equal(a.val.x, c.val.x)
    assert (len(a.train), len(a.val), len(a.test)) == (30, 10, 10)


def test_splits_partition_the_data(tiny):
    x, _ = tiny
    s = load_data("tiny", split_seed=5, val_fraction=0.2)
    rows = {tuple(r.flatten().tolist()) for part in (s.train, s.val, s.test) for r in part.x}
    assert len(rows) == 50 and rows == {tuple(r.flatten().tolist()) for r in x}


def test_subset(tiny):
    s = load_data("tiny", split_seed=0, val_fraction=0.1, subset=20)
    assert len(s.train) + len(s.val) + len(s.test) == 20


def test_normalisation_uses_train_split_only(tiny):
    s = load_data("tiny", split_seed=3, val_fraction=0.2)
    tr = s.train.x.float() / 255
    assert torch.allclose(s.train.mean, tr.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(s.train.std, tr.std(dim=(0, 2, 3)), atol=1e-6)
    full = torch.cat([s.train.x, s.val.x, s.test.x]).float() / 255
    assert not torch.allclose(s.train.mean, full.mean(dim=(0, 2, 3)), atol=1e-6)
    for part in (s.val, s.test):  # every split shares the train statistics
        assert torch.equal(part.mean, s.train.mean) and torch.equal(part.std, s.train.std)
    g = s.train.gather(torch.arange(len(s.train)))
    assert g.dtype == torch.float32
    assert torch.allclose(g.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(g.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-5)


def test_labels_out_of_range(monkeypatch):
    bad = RawData(torch.zeros(4, 2), torch.tensor([0, 1, 2, 3]), None, None, ["a", "b", "c"])
    monkeypatch.setitem(DATASETS._items, "bad", lambda root=None: bad)
    with pytest.raises(DataError, match=r"\[0, 2\]"):
        load_data("bad")
    empty = RawData(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), None, None, ["a"])
    monkeypatch.setitem(DATASETS._items, "empty", lambda root=None: empty)
    with pytest.raises(DataError, match="no training samples"):
        load_data("empty")


# ------------------------------------------------------------------------------- Loader


def _split(n: int = 23) -> Split:
    x = torch.arange(n, dtype=torch.float32).view(n, 1)
    return Split(x, torch.arange(n) % 3, torch.zeros(1), torch.ones(1))


def test_loader_covers_every_sample_once_per_epoch():
    sp = _split()
    ld = Loader(sp, batch_size=5, shuffle=True, seed=7)
    assert len(ld) == 5
    orders = []
    for epoch in range(3):
        ld.set_epoch(epoch)
        ids = torch.cat([b.index for b in ld])
        assert sorted(ids.tolist()) == list(range(23))
        xs = torch.cat([b.inputs for b in ld])
        assert torch.equal(xs.view(-1), ids.float())  # inputs line up with ids
        orders.append(ids)
    assert not torch.equal(orders[0], orders[1])
    ld.set_epoch(1)
    assert torch.equal(torch.cat([b.index for b in ld]), orders[1])  # replayable
    ld2 = Loader(sp, batch_size=5, shuffle=True, seed=7)
    ld2.set_epoch(2)
    assert torch.equal(torch.cat([b.index for b in ld2]), orders[2])


def test_loader_unshuffled_drop_last_and_ranks():
    sp = _split()
    ld = Loader(sp, batch_size=5, drop_last=True)
    batches = list(ld)
    assert len(ld) == len(batches) == 4 and all(len(b.index) == 5 for b in batches)
    assert torch.cat([b.index for b in batches]).tolist() == list(range(20))
    r0 = torch.cat([b.index for b in Loader(sp, 4, shuffle=True, seed=1, rank=0, world_size=2)])
    r1 = torch.cat([b.index for b in Loader(sp, 4, shuffle=True, seed=1, rank=1, world_size=2)])
    assert len(r0) == len(r1) == 11 and not set(r0.tolist()) & set(r1.tolist())
    with pytest.raises(DataError, match="empty"):
        Loader(_split(0), batch_size=4)


def test_loader_augmentation_is_replayable(tiny):
    s = load_data("tiny", split_seed=0, val_fraction=0.2)
    assert s.augment == Augment(pad=2, flip=True)

    def epoch(seed, e, views=None):
        ld = Loader(s.train, batch_size=8, shuffle=True, seed=seed, augment=s.augment)
        ld.views = views
        ld.set_epoch(e)
        batches = list(ld)
        order = torch.cat([b.index for b in batches])
        assert all(torch.equal(b.view, torch.full_like(b.index, e % views if views else e)) for b in batches)
        return torch.cat([b.inputs for b in batches])[order.argsort()]

    assert torch.equal(epoch(0, 1), epoch(0, 1))
    assert not torch.equal(epoch(0, 0), epoch(0, 1))
    assert not torch.equal(epoch(0, 1), epoch(1, 1))
    assert torch.equal(epoch(0, 3, views=2), epoch(0, 1, views=2))
    plain = Loader(s.train, batch_size=8)
    assert all(torch.equal(b.view, torch.zeros_like(b.index)) for b in plain)


# ------------------------------------------------------------------------------- augmentation


def test_augment_params_deterministic_and_in_range():
    idx = torch.arange(500)
    v0, v1 = torch.zeros(500, dtype=torch.long), torch.ones(500, dtype=torch.long)
    cfg = Augment(pad=3)
    p = augment_params(idx, v0, 11, cfg)
    assert p.shape == (500, 3) and p.dtype == torch.int64
    assert torch.equal(p, augment_params(idx, v0, 11, cfg))
    assert p[:, :2].min() == 0 and p[:, :2].max() == 6 and set(p[:, 2].tolist()) == {0, 1}
    assert (p != augment_params(idx, v1, 11, cfg)).any(1).float().mean() > 0.8  # views differ
    assert (p != augment_params(idx, v0, 12, cfg)).any(1).float().mean() > 0.8  # seeds differ
    # a sample's parameters depend only on (seed, index, view), not on the batch it is in
    sub = torch.tensor([7, 3, 400])
    assert torch.equal(augment_params(sub, v0[:3], 11, cfg), p[sub])
    assert (augment_params(idx, v0, 11, Augment(pad=3, flip=False))[:, 2] == 0).all()
    big = augment_params(idx[:4], v0[:4], 2**40, cfg)  # large seeds work
    assert big[:, :2].max() <= 6


def test_crop_keeps_shape_and_shifts():
    x = torch.randn(4, 3, 8, 8)
    pad = 2
    centre = torch.tensor([[pad, pad, 0]] * 4)
    assert torch.equal(apply_params(x, centre, pad), x)
    shifted = apply_params(x, torch.tensor([[pad + 1, pad - 2, 0]] * 4), pad)
    assert shifted.shape == x.shape
    assert torch.equal(shifted[:, :, :-1, 2:], x[:, :, 1:, :-2])
    assert (shifted[:, :, -1] == 0).all() and (shifted[:, :, :, :2] == 0).all()
    out = augment(x, torch.arange(4), torch.zeros(4, dtype=torch.long), 0, Augment(pad=pad))
    assert out.shape == x.shape


def test_flip_of_flip_is_identity():
    x = torch.randn(5, 2, 6, 7)
    flip = torch.tensor([[1, 1, 1]] * 5)
    once = apply_params(x, flip, 1)
    assert torch.equal(once, x.flip(-1))
    assert torch.equal(apply_params(once, flip, 1), x)
