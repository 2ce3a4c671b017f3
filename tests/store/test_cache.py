"""Teacher-output cache: identical inputs under augmentation, staleness, corruption, top-k, equality
with the live teacher, the run/CLI integration. Digits (8x8) and tiny models only."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from kdlab.config import load_config
from kdlab.core import Batch, Method, Outputs
from kdlab.data import Loader, load_data
from kdlab.engine.distiller import Distiller
from kdlab.engine.loop import Schedule, fit
from kdlab.errors import CheckpointError, ConfigError
from kdlab.models import create_model
from kdlab.store import ArraySpec, Store, StoreWriter, read_manifest
from kdlab.teachers import FrozenTeacher
from kdlab.teachers.cache_build import build_cache, cache_for_run, ensure_cache, topk_encode
from kdlab.teachers.cached import CachedTeacher, CachedViewLoader, cache_loader, topk_logits
from tests.conftest import trained_like_bn


@pytest.fixture(scope="module")
def plain():
    return load_data("digits", split_seed=0, augment=False)


@pytest.fixture(scope="module")
def aug():
    return load_data("digits", split_seed=0, augment=True)


def _teacher(seed: int = 0) -> FrozenTeacher:
    torch.manual_seed(seed)
    return FrozenTeacher(trained_like_bn(create_model("cnn_tiny", 10, 1, 8)))


class InputEcho(nn.Module):
    """A 'teacher' that returns its own input as a feature, so the cache stores what it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> Outputs:
        return Outputs(self.fc(x.flatten(1)), {"input": x})


class SameInputs(Method):
    """Asserts, at every step, that the student's inputs are the ones the cached teacher saw."""

    needs = frozenset({"logits", "features:*"})  # it reads the teacher's "input" feature

    def prepare(self, student, teacher, info):  # the student has no "input" feature: nothing to check
        pass

    def __init__(self) -> None:
        super().__init__()
        self.checked = 0
        self.views: set[int] = set()

    def forward(self, student, teacher, batch):
        assert torch.equal(teacher.features["input"], batch.inputs)
        self.checked += len(batch)
        self.views |= set(batch.view.tolist())
        return {"zero": student.logits.sum() * 0.0}


def test_student_inputs_equal_teacher_inputs_under_augmentation(aug, tmp_path):
    path = build_cache(FrozenTeacher(InputEcho()), aug, tmp_path / "c", views=3, features=["input"],
                       accelerate="eager", seed=7, log=None)
    teacher = CachedTeacher(path)
    # not vacuous: the views really differ from each other
    idx = torch.arange(len(aug.train))
    v0 = teacher(Batch(aug.train.gather(idx), index=idx, view=torch.zeros_like(idx))).features["input"]
    v1 = teacher(Batch(aug.train.gather(idx), index=idx, view=torch.ones_like(idx))).features["input"]
    assert (v0 != v1).flatten(1).any(1).float().mean() > 0.5
    orders = []
    for run_seed in (0, 1):  # runs with different seeds share the cache
        check = SameInputs()
        loader = cache_loader(aug, teacher, batch_size=64, seed=run_seed)
        assert isinstance(loader, CachedViewLoader) and loader.views == 3
        fit(Distiller(create_model("mlp_tiny", 10, 1, 8), teacher, [check]), aug,
            Schedule(epochs=3, batch_size=64, lr=0.01), seed=run_seed, loader=loader, progress=False)
        assert check.checked >= 3 * (len(aug.train) // 64) * 64 and check.views == {0, 1, 2}
        loader.set_epoch(0)
        orders.append(next(iter(loader)).index)
    assert not torch.equal(orders[0], orders[1])
    # the control: the default loader (augmentation seeded by the run, view = epoch) would not match
    plain_loader = Loader(aug.train, 64, shuffle=True, seed=0, augment=aug.augment)
    plain_loader.views = 3
    b = next(iter(plain_loader))
    assert not torch.equal(teacher(b).features["input"], b.inputs)


def test_cached_teacher_equals_live_teacher(plain, aug, tmp_path):
    t = _teacher()
    for data, views in ((plain, None), (aug, 2)):
        for dtype, tol in (("float32", 1e-5), ("float16", 2e-3)):
            path = build_cache(t, data, tmp_path / f"{dtype}{views}", views=views, dtype=dtype, features=["pooled"],
                               accelerate="eager", log=None)
            ct = CachedTeacher(path)
            loader = cache_loader(data, ct, batch_size=128, seed=3)
            for epoch in range(views or 1):
                loader.set_epoch(epoch)
                for b in loader:
                    got, ref = ct(b), t(b)
                    scale = ref.logits.abs().max()
                    assert (got.logits - ref.logits).abs().max() <= tol * scale
                    assert ((got.features["pooled"] - ref.features["pooled"]).abs().max()
                            <= tol * ref.features["pooled"].abs().max())
                    assert got.logits.dtype == torch.float32 and not got.logits.requires_grad


def test_accelerated_build_matches_eager(plain, tmp_path):
    t = _teacher()
    eager = CachedTeacher(build_cache(t, plain, tmp_path / "e", accelerate="eager", log=None))
    for mode in ("fold_bn", "onnx"):
        ct = CachedTeacher(build_cache(t, plain, tmp_path / mode, accelerate=mode, log=None))
        assert ct.manifest["built_with"] == mode
        a, b = ct.store.arrays["logits"], eager.store.arrays["logits"]
        assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()
    assert t.module.training is False  # the export left the teacher in eval mode


def test_topk_reconstruction():
    torch.manual_seed(0)
    z = torch.randn(64, 20) * 3
    p = z.softmax(1)
    for k in (1, 5, 10):
        vals, idx, tail = topk_encode(z, k)
        r = topk_logits(vals, idx, tail, 20)
        q = r.softmax(1)
        top = p.topk(k, 1)
        assert torch.allclose(q.gather(1, top.indices), top.values, atol=1e-6)  # top-k probabilities exact
        assert torch.equal(q.argmax(1), p.argmax(1))
        assert torch.allclose(q.sum(1), torch.ones(64), atol=1e-6)  # tail mass preserved
        rest = q.scatter(1, top.indices, 0.0)
        assert torch.allclose(rest.max(1).values * (20 - k), 1 - top.values.sum(1), atol=1e-5)  # spread uniformly
    vals, idx, tail = topk_encode(z, 20)
    assert torch.allclose(topk_logits(vals, idx, tail, 20), torch.log_softmax(z, 1), atol=1e-6)


def test_topk_cache_keeps_the_soft_labels(plain, tmp_path):
    t = _teacher()
    ct = CachedTeacher(build_cache(t, plain, tmp_path / "k", k=3, dtype="float16", accelerate="eager", log=None))
    assert ct.kind == "topk" and set(ct.store.arrays) == {"topk_values", "topk_indices", "topk_tail"}
    b = next(iter(cache_loader(plain, ct, 256, seed=0)))
    ref = t(b).logits.softmax(1)
    got = ct(b).logits.softmax(1)
    top = ref.topk(3, 1)
    assert torch.allclose(got.gather(1, top.indices), top.values, atol=2e-3)
    assert torch.allclose(got.sum(1), torch.ones(len(b)), atol=1e-5)


def test_stale_cache_is_rebuilt_with_a_message(plain, tmp_path):
    path = tmp_path / "c"
    msgs: list[str] = []
    t0, t1 = _teacher(0), _teacher(1)
    ct = ensure_cache(path, t0, plain, log=msgs.append, accelerate="eager")
    assert ct.built and any("building" in m for m in msgs)
    msgs.clear()
    ct = ensure_cache(path, t0, plain, log=msgs.append, accelerate="eager")  # matching: reused, nothing said
    assert not ct.built and msgs == []
    h0 = read_manifest(path)["teacher"]
    ct = ensure_cache(path, t1, plain, log=msgs.append, accelerate="eager")
    assert ct.built and any("stale" in m and "teacher weights changed" in m for m in msgs)
    assert read_manifest(path)["teacher"] != h0
    b = next(iter(cache_loader(plain, ct, 128, seed=0)))
    assert torch.allclose(ct(b).logits, t1(b).logits, atol=1e-5)
    msgs.clear()
    other = load_data("digits", split_seed=1, augment=False)  # another split
    ensure_cache(path, t1, other, log=msgs.append, accelerate="eager")
    assert any("training data changed" in m for m in msgs)
    msgs.clear()
    ensure_cache(path, t1, other, k=5, log=msgs.append, accelerate="eager")  # layout asked for changed
    assert any("top-k" in m for m in msgs) and read_manifest(path)["k"] == 5
    assert not ensure_cache(path, t1, other, log=msgs.append).built  # no layout asked: what is there serves
    with pytest.raises(CheckpointError, match="does not match"):
        ensure_cache(path, None, plain)  # stale and no teacher to rebuild it


def test_corrupt_cache_is_refused(plain, tmp_path):
    t = _teacher()
    path = build_cache(t, plain, tmp_path / "c", accelerate="eager", log=None)
    f = path / "logits.npy"
    blob = bytearray(f.read_bytes())
    blob[-7] ^= 0xFF
    f.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="corrupt.*checksum"):
        CachedTeacher(path)
    with pytest.raises(CheckpointError, match="checksum"):
        ensure_cache(path, t, plain)  # a matching but corrupt cache is refused, not silently rebuilt
    f.write_bytes(bytes(blob[:-40]))
    with pytest.raises(CheckpointError, match="truncated"):
        CachedTeacher(path, verify=False)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        ensure_cache(path, t, plain)


def test_augmentation_without_views_is_refused(aug, tmp_path):
    with pytest.raises(ConfigError, match="cache.views"):
        build_cache(_teacher(), aug, tmp_path / "c", log=None)
    cfg = load_config(base={"data": {"name": "digits", "augment": True}, "cache": str(tmp_path / "c")})
    assert cfg.cache is not None
    with pytest.raises(ConfigError, match="augmentation is on"):
        cache_for_run(cfg.cache, aug, _teacher(), batch_size=128, log=None)
    assert not (tmp_path / "c").exists()
    spec = cfg.cache.model_copy(update={"views": 2})
    ct, loader = cache_for_run(spec, aug, _teacher(), batch_size=128, log=None)
    assert ct.views == 2 and loader.views == 2
    loader.views = None  # a loader that runs past the cached views is refused clearly
    loader.set_epoch(2)
    with pytest.raises(CheckpointError, match="view 2 is not in the cache"):
        ct(next(iter(loader)))


def test_store_writer_is_atomic_and_checks_rows(tmp_path):
    spec = [ArraySpec("a", (3,), "float32")]
    with StoreWriter(tmp_path / "s", 4, 2, spec, {"note": 1}) as w:
        w.write(np.array([0, 1, 2, 3]), np.zeros(4), {"a": np.ones((4, 3))})
        w.write(np.array([3, 0, 2, 1]), np.ones(4), {"a": np.arange(12).reshape(4, 3)})
        w.commit()
    with Store(tmp_path / "s") as s:
        assert s.manifest["note"] == 1
        assert np.array_equal(s.read(np.array([0, 3]), np.array([1, 1]))["a"], [[3, 4, 5], [0, 1, 2]])
    before = (tmp_path / "s" / "a.npy").read_bytes()
    with pytest.raises(RuntimeError):
        with StoreWriter(tmp_path / "s", 4, 2, spec) as w:
            w.write(np.array([0]), np.array([0]), {"a": np.zeros((1, 3))})
            raise RuntimeError("killed mid-build")
    assert (tmp_path / "s" / "a.npy").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temporary left behind
    w = StoreWriter(tmp_path / "s", 4, 2, spec)
    w.write(np.array([0]), np.array([0]), {"a": np.zeros((1, 3))})
    with pytest.raises(CheckpointError, match="incomplete"):
        w.commit()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(CheckpointError, match="not a kdlab cache"):
        StoreWriter(tmp_path / "mine", 4, 1, spec)


def test_reader_releases_pages_and_still_reads(tmp_path):
    rows = 4096
    with StoreWriter(tmp_path / "s", rows, 1, [ArraySpec("a", (256,), "float32")]) as w:
        data = np.random.default_rng(0).standard_normal((rows, 256)).astype(np.float32)
        w.write(np.arange(rows), np.zeros(rows), {"a": data})
        w.commit()
    s = Store(tmp_path / "s", max_resident=1 << 20)  # 4 MiB store, 1 MiB allowed
    released = 0
    for i in range(0, rows, 256):
        idx = np.arange(i, i + 256)
        assert np.array_equal(s.read(idx, np.zeros_like(idx))["a"], data[idx])
        released += s._touched == 0
    assert released >= 3
    s.close()


def _rss_file_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no RssFile in /proc/self/status")


def test_reader_keeps_resident_memory_bounded(tmp_path):
    rows, width = 16384, 1024  # 64 MiB of float32
    with StoreWriter(tmp_path / "s", rows, 1, [ArraySpec("a", (width,), "float32")]) as w:
        for s0 in range(0, rows, 4096):
            idx = np.arange(s0, s0 + 4096)
            w.write(idx, np.zeros_like(idx), {"a": np.full((4096, width), s0, dtype=np.float32)})
        w.commit()
    order = np.random.default_rng(0).permutation(rows)
    growth = {}
    for name, limit in (("bounded", 8 << 20), ("unbounded", None)):
        s = Store(tmp_path / "s", verify=False, max_resident=limit)
        before = _rss_file_mb()
        peak = before
        for i in range(0, rows, 256):
            s.read(order[i:i + 256], np.zeros(256, dtype=np.int64))
            peak = max(peak, _rss_file_mb())
        growth[name] = peak - before
        s.close()
    assert growth["unbounded"] > 48  # the measurement sees the mapped pages...
    assert growth["bounded"] < 24  # ...and the reader drops them (8 MiB allowed, plus one read's worth)


def test_run_with_cache_matches_live_teacher_and_reuses_it(plain, tmp_path):
    from kdlab.api import run

    t = _teacher()
    base = {"data": {"name": "digits", "augment": False}, "student": {"name": "mlp_tiny"}, "report": False,
            "methods": [{"name": "ce", "weight": 0.1}, {"name": "kd", "weight": 0.9}],
            "train": {"epochs": 2, "batch_size": 64}}
    live = run(load_config(base=base), data=plain, teacher=t, save=False, progress=False)
    cfg = load_config(base={**base, "cache": str(tmp_path / "c")})
    cached = run(cfg, data=plain, teacher=t, save=False, progress=False)
    created = read_manifest(tmp_path / "c")["created"]
    again = run(cfg, data=plain, teacher=t, save=False, progress=False)
    assert read_manifest(tmp_path / "c")["created"] == created  # reused, not rebuilt
    for a, b in zip(live.history, cached.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    assert [h["train_loss"] for h in again.history] == [h["train_loss"] for h in cached.history]
    # the cache alone (no teacher at hand) serves a run on the same data
    no_teacher = run(cfg, data=plain, save=False, progress=False)
    assert no_teacher.history[-1]["train_loss"] == pytest.approx(cached.history[-1]["train_loss"], rel=1e-6)


def test_cli_cache_build_info_and_distill(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from kdlab.api import run
    from kdlab.cli.main import _register, app

    monkeypatch.chdir(tmp_path)
    run(load_config(base={"data": {"name": "digits"}, "student": {"name": "cnn_tiny"}, "train": {"epochs": 1},
                          "out": "t", "report": False}), command="train", progress=False)
    _register()
    cli = CliRunner()
    r = cli.invoke(app, ["cache", "build", "--teacher", "t/best", "--data", "digits", "--out", "c", "--topk", "5",
                         "--dtype", "float16"])
    assert r.exit_code == 0, r.output
    assert "top-5" in r.output and (tmp_path / "c" / "manifest.json").is_file()
    r = cli.invoke(app, ["cache", "build", "--teacher", "t/best", "--data", "digits", "--out", "c", "--topk", "5",
                         "--dtype", "float16"])
    assert "up to date" in r.output
    r = cli.invoke(app, ["cache", "info", "c"])
    assert r.exit_code == 0 and "checksums          ok" in r.output
    r = cli.invoke(app, ["cache", "info", "c", "--json"])
    assert json.loads(r.output)["k"] == 5
    r = cli.invoke(app, ["distill", "--teacher", "t/best", "--student", "mlp_tiny", "--data", "digits", "--epochs",
                         "1", "--out", "s", "--quiet", "cache=c", "report=false"])
    assert r.exit_code == 0, r.output
    assert read_manifest(tmp_path / "c")["k"] == 5  # the cache as built served the run
