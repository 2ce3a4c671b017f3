"""Teachers from outside kdlab: factory + safetensors, TorchScript, ONNX (black box), Hugging Face."""
import textwrap
import warnings

import pytest
import torch
from safetensors.torch import save_file

from kdlab.api import run
from kdlab.config import load_config
from kdlab.core import Batch
from kdlab.data import load_data
from kdlab.errors import CheckpointError, ConfigError, IncompatibleError
from kdlab.teachers.resolve import TeacherSpec, input_transform, resolve_teacher

FACTORY = textwrap.dedent('''
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, classes=10, width=16):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
            self.head = nn.Linear(4 * width, classes)

        def forward(self, x):
            return self.head(self.body(x).flatten(1))

    def build(classes=10, width=16):
        torch.manual_seed(0)
        return Net(classes, width)
''')


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


@pytest.fixture
def factory(tmp_path, monkeypatch):
    (tmp_path / "my_teachers.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    import sys

    sys.modules.pop("my_teachers", None)
    mod = importlib.import_module("my_teachers")
    model = mod.build(width=8)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # weights differ from the factory's init
    weights = tmp_path / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return model.eval(), weights


def spec(**teacher):
    return TeacherSpec(**teacher)


def inputs(data, n=32):
    return data.test.gather(torch.arange(n))


def test_factory_with_safetensors_weights(digits, factory):
    model, weights = factory
    t = resolve_teacher(spec(factory="my_teachers:build", options={"width": 8}, weights=str(weights)), digits)
    x = inputs(digits)
    torch.testing.assert_close(t(Batch(x)).logits, model(x), rtol=0, atol=0)
    # features by submodule path, for feature-based methods
    t = resolve_teacher(spec(factory="my_teachers:build", options={"width": 8}, weights=str(weights),
                                features={"pooled": "body"}), digits)
    assert t(Batch(x)).features["pooled"].shape == (32, 8 * 4)


def test_renormalises_inputs_to_the_teachers_statistics(digits, factory):
    model, weights = factory
    mean, std = 0.5, 0.25  # what this teacher was trained with, on [0, 1] pixels
    t = resolve_teacher(spec(factory="my_teachers:build", options={"width": 8}, weights=str(weights),
                                mean=[mean], std=[std]), digits)
    idx = torch.arange(16)
    raw = digits.test.x[idx].float() * digits.test.scale
    expected = model((raw - mean) / std)
    torch.testing.assert_close(t(Batch(digits.test.gather(idx))).logits, expected, rtol=1e-5, atol=1e-5)
    # same statistics as the data: no transform at all
    m, sd = digits.train.mean, digits.train.std
    assert input_transform(m, sd, m.tolist(), sd.tolist()) is None
    with pytest.raises(ConfigError, match="go together"):
        input_transform(digits.train.mean, digits.train.std, [0.5], None)
    with pytest.raises(ConfigError, match="3 values but the inputs have 1 channels"):
        input_transform(digits.train.mean, digits.train.std, [0.5] * 3, [0.2] * 3)


def test_factory_errors(digits, factory, tmp_path):
    _, weights = factory
    with pytest.raises(ConfigError, match="exactly one source"):
        resolve_teacher(spec(factory="my_teachers:build", weights=str(weights), onnx="t.onnx"), digits)
    with pytest.raises(ConfigError, match="package.module:function"):
        resolve_teacher(spec(factory="my_teachers.build"), digits)
    with pytest.raises(ConfigError, match="cannot import 'no_such_pkg'"):
        resolve_teacher(spec(factory="no_such_pkg.mod:build"), digits)
    with pytest.raises(ConfigError, match="no attribute 'nope'"):
        resolve_teacher(spec(factory="my_teachers:nope"), digits)
    pickled = tmp_path / "teacher.pt"
    torch.save({}, pickled)
    with pytest.raises(ConfigError, match="pickled checkpoints are refused"):
        resolve_teacher(spec(factory="my_teachers:build", weights=str(pickled)), digits)
    with pytest.raises(CheckpointError, match="weights do not fit"):  # width 16 vs the saved width 8
        resolve_teacher(spec(factory="my_teachers:build", weights=str(weights)), digits)
    with pytest.raises(IncompatibleError, match=r"logits of shape \(2, 3\).*10 classes"):
        resolve_teacher(spec(factory="my_teachers:build", options={"classes": 3}), digits)


def test_torchscript_teacher(digits, factory, tmp_path):
    model, _ = factory
    path = tmp_path / "teacher.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(model, inputs(digits, 2)).save(str(path))
    t = resolve_teacher(spec(torchscript=str(path)), digits)
    x = inputs(digits)
    torch.testing.assert_close(t(Batch(x)).logits, model(x), rtol=1e-5, atol=1e-5)
    (tmp_path / "bad.pt").write_bytes(b"not a program")
    with pytest.raises(CheckpointError, match="not a TorchScript file"):
        resolve_teacher(spec(torchscript=str(tmp_path / "bad.pt")), digits)


def _export_onnx(model, x, path, dynamic=True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["logits"], dynamo=False,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None)


def test_onnx_black_box_teacher_distils(digits, factory, tmp_path):
    model, _ = factory
    path = tmp_path / "teacher.onnx"
    _export_onnx(model, inputs(digits, 2), path)
    c = load_config(base={"data": {"name": "digits"}, "student": {"name": "mlp_tiny"}, "teacher": {"onnx": str(path)},
                          "methods": [{"name": "ce", "weight": 0.1}, {"name": "kd", "weight": 0.9, "T": 4}],
                          "train": {"epochs": 1, "batch_size": 64}, "report": False})
    t = resolve_teacher(c.teacher, digits)
    x = inputs(digits, 50)
    out = t(Batch(x))
    assert out.features == {}
    torch.testing.assert_close(out.logits, model(x), rtol=1e-4, atol=1e-5)
    r = run(c, data=digits, save=False, progress=False)
    assert len(r.history) == 1 and r.history[0]["train_kd"] > 0
    # a feature method cannot use a logits-only teacher: refused before training
    c2 = c.model_copy(update={"methods": load_config(base={"methods": [{"name": "at"}]}).methods})
    with pytest.raises(IncompatibleError, match="feature"):
        run(c2, data=digits, save=False, progress=False)


def test_onnx_fixed_batch_is_fed_in_chunks(digits, factory, tmp_path):
    model, _ = factory
    path = tmp_path / "fixed.onnx"
    _export_onnx(model, inputs(digits, 1), path, dynamic=False)
    t = resolve_teacher(spec(onnx=str(path)), digits)
    assert t.fixed_batch == 1
    x = inputs(digits, 5)
    torch.testing.assert_close(t(Batch(x)).logits, model(x), rtol=1e-4, atol=1e-5)
    (tmp_path / "bad.onnx").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a loadable ONNX model"):
        resolve_teacher(spec(onnx=str(tmp_path / "bad.onnx")), digits)


def test_hugging_face_directory_teacher(digits, tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=32, num_labels=10)
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(config).eval()
    model.save_pretrained(str(tmp_path / "vit"), safe_serialization=True)
    assert (tmp_path / "vit" / "model.safetensors").is_file()
    t = resolve_teacher(spec(hf=str(tmp_path / "vit")), digits)
    x = inputs(digits, 8)
    out = t(Batch(x))
    with torch.no_grad():
        torch.testing.assert_close(out.logits, model(pixel_values=x).logits, rtol=1e-5, atol=1e-5)
    assert out.features["pooled"].shape == (8, 16)
    # a bare encoder has no logits
    transformers.ViTModel(config).save_pretrained(str(tmp_path / "bare"))
    with pytest.raises(IncompatibleError, match="no classification head"):
        resolve_teacher(spec(hf=str(tmp_path / "bare")), digits)


def test_a_bare_path_picks_the_source(digits, factory, tmp_path):
    """`--teacher teacher.onnx` / `teacher.pt` work where a kdlab checkpoint path does."""
    from kdlab.teachers.onnx import OnnxTeacher
    from kdlab.teachers.resolve import kind_of_path

    model, _ = factory
    _export_onnx(model, inputs(digits, 2), tmp_path / "t.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(model, inputs(digits, 2)).save(str(tmp_path / "t.pt"))
    assert kind_of_path(tmp_path / "t.onnx") == "onnx" and kind_of_path(tmp_path / "t.pt") == "torchscript"
    assert kind_of_path(tmp_path / "run" / "best") == kind_of_path("run/best.safetensors") == "checkpoint"
    x = inputs(digits)
    onnx_teacher = resolve_teacher(str(tmp_path / "t.onnx"), digits)
    assert isinstance(onnx_teacher, OnnxTeacher)
    torch.testing.assert_close(onnx_teacher(Batch(x)).logits, model(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(resolve_teacher(tmp_path / "t.pt", digits)(Batch(x)).logits, model(x),
                               rtol=1e-5, atol=1e-5)


def test_onnx_teacher_fills_a_cache_keyed_by_its_file(digits, factory, tmp_path):
    """A teacher known only by its file is fingerprinted by the file's bytes: a cache built from it
    is reused while the file is unchanged and rebuilt when the file changes."""
    from kdlab.teachers.cache_build import ensure_cache, teacher_fingerprint

    model, _ = factory
    path = tmp_path / "t.onnx"
    _export_onnx(model, inputs(digits, 2), path)
    t = resolve_teacher(spec(onnx=str(path)), digits)
    fp = teacher_fingerprint(t)
    ct = ensure_cache(tmp_path / "cache", t, digits, log=None)
    assert ct.built and ct.fingerprint() == fp
    assert not ensure_cache(tmp_path / "cache", t, digits, log=None).built
    idx = torch.arange(5)
    got = ct(Batch(digits.train.gather(idx), index=idx, view=torch.zeros_like(idx))).logits
    torch.testing.assert_close(got, model(digits.train.gather(idx)), rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        next(model.parameters()).add_(0.5)
    _export_onnx(model, inputs(digits, 2), path)
    t2 = resolve_teacher(spec(onnx=str(path)), digits)
    assert teacher_fingerprint(t2) != fp
    msgs: list[str] = []
    assert ensure_cache(tmp_path / "cache", t2, digits, log=msgs.append).built
    assert any("teacher weights changed" in m for m in msgs)
