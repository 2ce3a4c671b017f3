"""resolve_teacher: the one way to a Teacher, and the teachers it refuses (in one line, before training)."""
import hashlib
import json
import pickle
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kdlab.core import Batch, Outputs
from kdlab.data import load_data
from kdlab.errors import CheckpointError, ConfigError, IncompatibleError
from kdlab.models.load import load_model, model_for_data
from kdlab.models.spec import ModelSpec
from kdlab.store.checkpoint import save_weights
from kdlab.teachers import FrozenTeacher
from kdlab.teachers.external import traced_input_shape
from kdlab.teachers.resolve import TeacherSpec, check_teacher_meta, kind_of_path, resolve_teacher


class Pooled(nn.Module):
    """Any input size works (adaptive pooling): running it cannot tell which size it was made for."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(1))


class Payload:
    """Unpickling this creates ``path``: proof that a loader ran pickled code."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """1x16x16 images, 10 classes: what a teacher made for 8x8 digits must refuse."""
    p = tmp_path_factory.mktemp("big") / "big.npz"
    rng = np.random.default_rng(0)
    np.savez(p, x=rng.random((80, 1, 16, 16)).astype(np.float32), y=np.arange(80) % 10)
    return load_data("npz", root=str(p))


def _trace(model: nn.Module, x: torch.Tensor, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(model.eval(), x).save(str(path))
    return path


def _checkpoint(stem: Path, data, name: str = "cnn_tiny") -> Path:
    torch.manual_seed(0)
    model = model_for_data(name, data)
    meta = {"model": model.kdlab_spec, "data": data.name, "classes": data.classes,
            "input_shape": list(data.input_shape), "mean": data.train.mean.tolist(), "std": data.train.std.tolist(),
            "scale": data.train.scale}
    save_weights(stem, model, meta)
    return stem


def test_traced_torchscript_refuses_inputs_of_another_size(digits, big, tmp_path):
    """Traced on 8x8 digits, given 16x16 images: the program runs (adaptive pooling) and gives 10
    logits, so only the recorded traced shape can tell; it is refused in one line naming both shapes."""
    path = _trace(Pooled(), digits.train.gather(torch.arange(2)), tmp_path / "t.pt")
    module = torch.jit.load(str(path))
    assert module(big.train.gather(torch.arange(2))).shape == (2, 10)  # running it cannot tell
    for source in (path, str(path), TeacherSpec(torchscript=str(path)), TeacherSpec(checkpoint=str(path))):
        with pytest.raises(IncompatibleError) as e:
            resolve_teacher(source, big)
        msg = str(e.value)
        assert len(msg.splitlines()) == 1
        assert "expects inputs (1, 8, 8)" in msg and "gives (1, 16, 16)" in msg and str(path) in msg, msg
    teacher = resolve_teacher(path, digits)  # the data it was traced for
    assert traced_input_shape(teacher.module) == (1, 8, 8)
    x = digits.test.gather(torch.arange(5))
    torch.testing.assert_close(teacher(Batch(x)).logits, module(x))


def test_scripted_torchscript_is_checked_by_the_export_json_beside_it(digits, big, tmp_path):
    """A scripted program records no input shape; the export.json kdlab writes beside its files does
    (and is ignored once the file no longer has the checksum it records)."""
    path = tmp_path / "model.pt"
    torch.jit.script(Pooled()).save(str(path))
    manifest = {"classes": digits.classes, "input": {"name": "input", "shape": ["batch", 1, 8, 8]},
                "preprocess": {"mean": digits.train.mean.tolist(), "std": digits.train.std.tolist()},
                "files": {"torchscript": {"path": "model.pt", "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}}}
    (tmp_path / "export.json").write_text(json.dumps(manifest))
    with pytest.raises(IncompatibleError, match=r"expects inputs \(1, 8, 8\) but dataset 'npz' gives \(1, 16, 16\)"):
        resolve_teacher(path, big)
    assert resolve_teacher(path, digits)(Batch(digits.test.gather(torch.arange(3)))).logits.shape == (3, 10)
    # the class count the manifest records is checked before the program is loaded
    (tmp_path / "export.json").write_text(json.dumps({**manifest, "classes": ["a", "b", "c"]}))
    with pytest.raises(IncompatibleError, match="predicts 3 classes but dataset 'digits' has 10"):
        resolve_teacher(path, digits)
    # another program saved under the same name: the manifest no longer describes it
    torch.jit.script(Pooled()).save(str(path))
    assert resolve_teacher(path, big)(Batch(big.test.gather(torch.arange(3)))).logits.shape == (3, 10)


def test_wrong_class_count_is_refused_for_a_program_of_any_shape(digits, tmp_path):
    path = tmp_path / "three.pt"
    torch.jit.script(Pooled(classes=3)).save(str(path))
    with pytest.raises(IncompatibleError, match=r"logits of shape \(2, 3\) but dataset 'digits' has 10 classes"):
        resolve_teacher(path, digits)


def test_kdlab_export_files_are_teachers_like_their_checkpoint(digits, big, tmp_path):
    """model.pt / model.onnx written by `kdlab export` answer as the checkpoint does, re-normalised
    to the checkpoint's statistics on data normalised otherwise, and refuse data of another size."""
    from kdlab.export import export

    stem = _checkpoint(tmp_path / "t" / "best", digits)
    export(stem, tmp_path / "deploy", samples=32, batch=8)
    other = load_data("digits", subset=300)  # other normalisation statistics
    assert not torch.allclose(other.train.mean, digits.train.mean)
    x = other.test.gather(torch.arange(16))
    ref = resolve_teacher(stem, other)(Batch(x)).logits
    for name in ("model.pt", "model.onnx"):
        got = resolve_teacher(tmp_path / "deploy" / name, other)(Batch(x)).logits
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
        with pytest.raises(IncompatibleError, match=r"expects inputs \(1, 8, 8\).* gives \(1, 16, 16\)"):
            resolve_teacher(tmp_path / "deploy" / name, big)


def test_a_pickle_path_is_refused_unread_naming_the_accepted_forms(digits, tmp_path):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ConfigError) as e:
        resolve_teacher(evil, digits)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and str(evil) in msg and "evil.safetensors" not in msg, msg
    for form in ("run/best", ".safetensors", ".onnx", ".pt", ".ts", "TorchScript", "transformers"):
        assert form in msg, (form, msg)
    # a torch.save file named like a TorchScript one is refused without being unpickled too
    torch.save({"w": Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="torch.save pickle, not a TorchScript program"):
        resolve_teacher(tmp_path / "evil.pt", digits)
    assert not marker.exists(), "the pickle payload ran"


@pytest.mark.parametrize("name", ["evil.pkl", "evil.pt"])
def test_cli_teacher_that_is_a_pickle(digits, tmp_path, monkeypatch, capsys, name):
    """`kdlab distill --teacher evil.pkl`: one line naming the file given, exit code 2, nothing run."""
    from kdlab.cli.main import main

    marker = tmp_path / "PWNED"
    if name.endswith(".pkl"):
        (tmp_path / name).write_bytes(pickle.dumps(Payload(marker)))
    else:
        torch.save({"w": Payload(marker)}, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["kdlab", "distill", "--teacher", name, "--student", "mlp_tiny", "--data",
                                      "digits", "--epochs", "1", "--quiet", "report=false"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert name in err and "evil.safetensors" not in err, err
    assert not marker.exists(), "the pickle payload ran"


def test_paths_name_what_is_wrong(digits, tmp_path):
    with pytest.raises(ConfigError, match=r"teacher .*gone\.pt not found"):  # not 'gone.safetensors'
        resolve_teacher(tmp_path / "gone.pt", digits)
    with pytest.raises(ConfigError, match=r"gone\.onnx not found"):
        resolve_teacher(tmp_path / "gone.onnx", digits)
    with pytest.raises(CheckpointError, match=r"nope/best\.safetensors not found"):
        resolve_teacher(str(tmp_path / "nope" / "best"), digits)
    run = tmp_path / "run"
    _checkpoint(run / "best", digits)
    with pytest.raises(ConfigError, match=r"is a run directory: give one of its checkpoints, e\.g\. .*run/best"):
        resolve_teacher(run, digits)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a transformers model directory"):
        resolve_teacher(tmp_path / "empty", digits)
    assert kind_of_path(run / "best.safetensors") == kind_of_path(run / "best.json") == "checkpoint"
    with pytest.raises(ConfigError, match="a teacher is a kdlab checkpoint"):
        kind_of_path("teacher.bin")


def test_checkpoint_teacher_is_re_normalised_and_checked(digits, big, tmp_path):
    stem = _checkpoint(tmp_path / "t" / "best", digits)
    model, meta = load_model(stem)
    other = load_data("digits", subset=300)
    idx = torch.arange(8)
    raw = other.test.x[idx].float() * other.test.scale
    expected = model((raw - torch.tensor(meta["mean"]).view(1, -1, 1, 1)) / torch.tensor(meta["std"]).view(1, -1, 1, 1))
    for source in (stem, str(stem) + ".safetensors", TeacherSpec(checkpoint=str(stem))):
        got = resolve_teacher(source, other)(Batch(other.test.gather(idx)))
        torch.testing.assert_close(got.logits, as_logits(expected), rtol=1e-5, atol=1e-5)
    # teacher.mean/std given: they win over the checkpoint's
    t = resolve_teacher(TeacherSpec(checkpoint=str(stem), mean=[0.5], std=[0.25]), other)
    torch.testing.assert_close(t(Batch(other.test.gather(idx))).logits, as_logits(model((raw - 0.5) / 0.25)),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(IncompatibleError, match=r"expects inputs \(1, 8, 8\) but dataset 'npz' gives \(1, 16, 16\)"):
        resolve_teacher(stem, big)
    with pytest.raises(IncompatibleError, match="predicts 3 classes but dataset 'digits' has 10"):
        check_teacher_meta({"classes": ["a", "b", "c"]}, digits, "x")


def as_logits(o):
    return o.logits if isinstance(o, Outputs) else o


def test_spec_sources_modules_and_teachers(digits, tmp_path):
    stem = _checkpoint(tmp_path / "t" / "best", digits, "mlp_tiny")
    model, _ = load_model(stem)
    x = digits.test.gather(torch.arange(4))
    t = resolve_teacher(TeacherSpec(model=ModelSpec(name="mlp_tiny"), weights=str(stem) + ".safetensors"), digits)
    torch.testing.assert_close(t(Batch(x)).logits, model(x).logits)
    built: list[str] = []

    def build(name, data, **options):
        built.append(name)
        return model_for_data(name, data, **options)

    resolve_teacher(TeacherSpec(model={"name": "mlp_tiny"}), digits, build_model=build)
    assert built == ["mlp_tiny"]
    assert isinstance(resolve_teacher(model, digits), FrozenTeacher)
    f = lambda b: Outputs(torch.zeros(len(b.inputs), 10))  # noqa: E731
    assert resolve_teacher(f, digits) is f
    with pytest.raises(ConfigError, match="exactly one source, not checkpoint \\+ model"):
        resolve_teacher(TeacherSpec(checkpoint=str(stem), model={"name": "mlp_tiny"}), digits)
    with pytest.raises(ConfigError, match="teacher.weights goes with"):
        resolve_teacher(TeacherSpec(checkpoint=str(stem), weights="w.safetensors"), digits)
    with pytest.raises(ConfigError, match="give teacher.checkpoint"):
        resolve_teacher(TeacherSpec(), digits)
    with pytest.raises(ConfigError, match="cannot use int as a teacher"):
        resolve_teacher(3, digits)  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="cannot be loaded into 'cnn_small'"):
        resolve_teacher(TeacherSpec(model={"name": "cnn_small"}, weights=str(stem) + ".safetensors"), digits)


def test_a_file_of_outputs_is_a_teacher_and_its_class_count_is_checked(tmp_path):
    """Any scheme that takes a teacher path takes a black box given as its logits (.npz/.npy)."""
    from kdlab.teachers.from_file import FileTeacher
    from kdlab.teachers.resolve import resolve_teacher

    data = load_data("digits")
    np.savez(tmp_path / "t.npz", logits=np.zeros((len(data.train), 10), np.float32))
    assert isinstance(resolve_teacher(str(tmp_path / "t.npz"), data), FileTeacher)
    np.save(tmp_path / "three.npy", np.zeros((len(data.train), 3), np.float32))
    with pytest.raises(IncompatibleError, match="holds 3 classes but dataset 'digits' has 10"):
        resolve_teacher(str(tmp_path / "three.npy"), data)
