"""Data-free distillation: synthesizer steps leave the teacher bit-identical, unusable teachers are
refused before any work, a digits run beats chance by a wide margin without reading the training
split, and a resumed run is exact."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kdlab.api import scheme
from kdlab.cli.main import _register, app
from kdlab.core import Batch, Outputs
from kdlab.data import Loader, Split
from kdlab.errors import ConfigError, IncompatibleError
from kdlab.models.load import model_for_data
from kdlab.synth import SynthLoader, create_synth, grad_teacher
from kdlab.teachers.frozen import FrozenTeacher
from tests.reliability._helpers import make_teacher

FAST = {"batch_size": 32, "lr": 0.05}


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    """A cnn_tiny (BatchNorm) digits teacher trained on real data, as a user would hold one."""
    return make_teacher(tmp_path_factory.mktemp("dft") / "t", model="cnn_tiny", epochs=8)


def _state(m: torch.nn.Module) -> dict:
    return {k: v.clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("name", ["dafl", "dfad", "zskt", "deepinv"])
def test_a_synth_step_moves_the_generator_or_inputs_never_the_teacher(digits, name):
    torch.manual_seed(0)
    tmod = model_for_data("cnn_tiny", digits)
    with torch.no_grad():  # non-trivial BN statistics to invert
        for m in tmod.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    teacher = FrozenTeacher(tmod)
    student = model_for_data("cnn_tiny", digits)
    opts = {"dfad": {"student_steps": 1}, "zskt": {"student_steps": 1},
            "deepinv": {"iterations": 5, "synth_every": 1, "bank_size": 64}}.get(name, {})
    synth = create_synth(name, batch_size=16, **opts)
    synth.bind(grad_teacher(teacher, needs_bn=synth.needs_bn, synth=name), student, digits.input_shape, 10)
    t0, s0 = _state(tmod), _state(student)
    g0 = _state(synth.generator) if hasattr(synth, "generator") else None
    torch.manual_seed(1)
    noise = torch.randn(16, *digits.input_shape)  # what deepinv's first inversion starts from
    torch.manual_seed(1)
    xs = [synth.step() for _ in range(3)]
    assert all(x.shape == (16, *digits.input_shape) and not x.requires_grad for x in xs)
    for k, v in tmod.state_dict().items():  # weights and BN statistics, bit for bit
        assert torch.equal(v, t0[k]), k
    assert all(p.grad is None for p in tmod.parameters())
    assert all(p.grad is None for p in student.parameters())  # the student is read, never stepped
    for k, v in student.state_dict().items():
        if "running" not in k and "num_batches" not in k:  # DFAD's generator step runs the student in train mode
            assert torch.equal(v, s0[k]), k
    if g0 is not None:
        assert any(not torch.equal(v, g0[k]) for k, v in synth.generator.state_dict().items() if "weight" in k)
    else:
        assert synth.filled == 48 and not torch.allclose(synth.bank[:16].sort(0).values, noise.sort(0).values)


def test_the_loops_shape_probe_trains_nothing_and_draws_no_global_rng(digits):
    synth = create_synth("dafl", batch_size=8)
    synth.bind(grad_teacher(FrozenTeacher(model_for_data("cnn_tiny", digits)), needs_bn=False, synth="dafl"),
               model_for_data("cnn_tiny", digits), digits.input_shape, 10)
    loader = SynthLoader(synth, steps=3)
    g0, rng = _state(synth.generator), torch.get_rng_state()
    probe = next(iter(loader))
    assert probe.targets is None and len(probe) == 8
    assert all(torch.equal(v, g0[k]) for k, v in synth.generator.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng) and synth.count == 0
    loader.set_epoch(0)
    assert len(list(loader)) == 3 and synth.count == 3


class _BlackBox:
    def __call__(self, batch: Batch) -> Outputs:
        return Outputs(torch.zeros(len(batch), 10))


class _NoGrad(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.fc(x.flatten(1))


def test_teachers_without_gradients_or_bn_statistics_are_refused(digits, tmp_path):
    from kdlab.teachers.from_file import FileTeacher

    np.save(tmp_path / "t.npy", np.zeros((len(digits.train), 10), dtype=np.float32))
    with pytest.raises(IncompatibleError, match="needs gradients through the teacher.*a file of outputs"):
        grad_teacher(FileTeacher(tmp_path / "t.npy"), needs_bn=False, synth="dafl")
    with pytest.raises(IncompatibleError, match="black box"):
        grad_teacher(_BlackBox(), needs_bn=False, synth="dfad")
    scripted = torch.jit.script(_NoGrad())
    with pytest.raises(IncompatibleError, match="TorchScript teacher's outputs carry none"):
        grad_teacher(FrozenTeacher(scripted), needs_bn=False, synth="zskt")
    mlp = FrozenTeacher(model_for_data("mlp_tiny", digits))
    with pytest.raises(IncompatibleError, match="no BatchNorm layers"):
        grad_teacher(mlp, needs_bn=True, synth="deepinv")
    assert grad_teacher(mlp, needs_bn=False, synth="dafl").module is mlp.module  # a generator needs no BN


def test_cli_refuses_before_any_work(teacher_ckpt, tmp_path, monkeypatch):
    import subprocess
    import sys

    from kdlab.errors import KDLabError

    _register()
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "t.npy", np.zeros((10, 10), dtype=np.float32))
    mlp = make_teacher(tmp_path / "mlp", model="mlp_tiny", epochs=1)
    runner = CliRunner()
    for args, msg in ((["--teacher", "t.npy"], "needs gradients through the teacher"),
                      (["--teacher", "cnn_tiny"], "needs a trained teacher"),
                      (["--teacher", str(teacher_ckpt), "--synth", "gan"], "scheme.synth"),
                      (["--teacher", str(teacher_ckpt), "scheme.synth_options.bogus=1"], "no hyperparameter 'bogus'"),
                      (["--teacher", str(mlp), "--synth", "deepinv"], "no BatchNorm layers")):
        res = runner.invoke(app, ["data-free", *args, "--data", "digits", "--out", "r", "--quiet"])
        assert isinstance(res.exception, KDLabError), (args, res.output, res.exception)
        assert msg in str(res.exception) and "\n" not in str(res.exception), args
        assert not (tmp_path / "r").exists()
    p = subprocess.run([sys.executable, "-m", "kdlab", "data-free", "--teacher", "t.npy", "--data", "digits", "--out",
                        "r"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "needs gradients through the teacher" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_digits_data_free_student_beats_chance_without_reading_the_training_split(digits, teacher_ckpt, tmp_path,
                                                                                monkeypatch):
    poisoned = replace(digits, train=replace(digits.train, x=torch.full_like(digits.train.x, float("nan"))))
    seen = []
    gather, loader_init = Split.gather, Loader.__init__

    def spy_gather(self, idx):
        seen.append(self.x is poisoned.train.x)
        return gather(self, idx)

    def spy_loader(self, split, *a, **k):
        seen.append(split.x is poisoned.train.x)
        loader_init(self, split, *a, **k)

    monkeypatch.setattr(Split, "gather", spy_gather)
    monkeypatch.setattr(Loader, "__init__", spy_loader)
    out = tmp_path / "df"
    r = scheme("data-free", poisoned, epochs=3, out=str(out), train=FAST, teacher=str(teacher_ckpt),
               student="cnn_tiny", synth="deepinv", steps=20,
               synth_options={"iterations": 60, "synth_every": 10, "bank_size": 256}, samples=64)
    assert seen and not any(seen)  # the test split was read (to measure), the training split never
    assert r.test["acc"] > 0.5, r.test  # chance is 0.1
    e = r.extra
    assert e["synth"] == "deepinv" and e["teacher_acc"] > 0.8 and sum(e["class_histogram"]) == 64
    assert e["diversity"] > 0
    assert all("test_acc" in h and "epoch_cpu_seconds" in h for h in r.history)
    assert r.test["acc"] == pytest.approx(r.history[-1]["test_acc"])  # the last epoch is deployed
    figs = {f["key"] for f in e["figures"]}
    assert figs == {"synth_samples", "synth_classes", "synth_diversity", "accuracy_vs_compute"}
    assert all((out / "data_free" / f"{k}.png").read_bytes()[:4] == b"\x89PNG" for k in figs)
    html = (out / "report.html").read_text()
    assert "Synthesised samples" in html and "Test accuracy vs CPU minutes" in html
    summary = json.loads((out / "summary.json").read_text())
    assert summary["extra"]["class_histogram"] == e["class_histogram"]


@pytest.mark.parametrize("synth, options", [("dfad", {"student_steps": 2}),
                                            ("deepinv", {"iterations": 3, "synth_every": 3, "bank_size": 64})])
def test_resume_is_exact(digits, teacher_ckpt, tmp_path, monkeypatch, synth, options):
    import kdlab.report

    monkeypatch.setattr(kdlab.report, "report_after_run", lambda *a, **k: None)  # not what is tested here
    kw = dict(train={**FAST, "lr_schedule": "constant"}, teacher=str(teacher_ckpt), student="cnn_tiny", synth=synth,
              steps=4, synth_options=options, samples=16, curve=False)
    a = scheme("data-free", digits, epochs=2, out=str(tmp_path / "a"), **kw)
    scheme("data-free", digits, epochs=1, out=str(tmp_path / "b"), **kw)
    b = scheme("data-free", digits, epochs=2, out=str(tmp_path / "b"), resume=True, **kw)

    def strip(h):
        return [{k: v for k, v in r.items() if "seconds" not in k} for r in h]

    assert strip(a.history) == strip(b.history)
    for k, v in a.student.state_dict().items():
        assert torch.equal(v, b.student.state_dict()[k]), k
    state_a = torch.load(tmp_path / "a" / "state.pt", weights_only=True)["model"]["_extra_state"]
    state_b = torch.load(tmp_path / "b" / "state.pt", weights_only=True)["model"]["_extra_state"]
    assert state_a["count"] == state_b["count"] == 8
    for key in ("generator", "bank"):  # the generator's weights, or the memory bank of inverted samples
        if key in state_a:
            va, vb = state_a[key], state_b[key]
            for k in (va if isinstance(va, dict) else {"": va}):
                x, y = (va[k], vb[k]) if isinstance(va, dict) else (va, vb)
                assert torch.equal(x, y), (key, k)
    if synth == "deepinv":
        assert len(state_a["bank"]) == 64 and state_a["ptr"] == 96 % 64  # 3 inversions of 32 in a bank of 64


def test_bad_synth_options_are_config_errors():
    with pytest.raises(ConfigError, match="no hyperparameter 'iters'"):
        create_synth("deepinv", iters=3)
    with pytest.raises(ConfigError, match="student_steps must be >= 1"):
        create_synth("dfad", student_steps=0)


def test_exported_teachers_onnx_refused_torchscript_without_bn_hooks(digits, teacher_ckpt, tmp_path):
    from kdlab.export import export
    from kdlab.teachers.resolve import resolve_teacher

    export(teacher_ckpt, tmp_path / "exp", samples=64, batch=8)
    onnx = resolve_teacher(tmp_path / "exp" / "model.onnx", digits)
    with pytest.raises(IncompatibleError, match="gradients through the teacher, but the teacher is an ONNX model"):
        grad_teacher(onnx, needs_bn=False, synth="dfad")
    ts = resolve_teacher(tmp_path / "exp" / "model.pt", digits)
    assert grad_teacher(ts, needs_bn=False, synth="dfad") is not None  # a traced program passes gradients
    with pytest.raises(IncompatibleError, match="TorchScript program does not take"):
        grad_teacher(ts, needs_bn=True, synth="deepinv")


def test_without_training_data_keeps_the_description_not_the_samples(digits):
    from kdlab.schemes.data_free import without_training_data

    free = without_training_data(replace(digits, train=replace(digits.train, scale=0.5)))
    assert len(free.train) == 0 and free.train.y is None and free.augment is None
    assert free.input_shape == digits.input_shape and free.num_classes == 10
    assert free.train.scale == 0.5 and torch.equal(free.train.mean, digits.train.mean)  # the deployed pre-processing
    assert free.test is digits.test
