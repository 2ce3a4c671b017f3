"""The adversarial trainable (kdlab.engine.adversarial): PGD examples crafted inside forward, the
student trains on them, a live teacher sees the clean inputs; ε = 0 is the inner trainable."""
import pytest
import torch

from kdlab.core import Batch, DataInfo, Outputs
from kdlab.data import Loader
from kdlab.engine.adversarial import Adversarial
from kdlab.engine.distiller import Distiller
from kdlab.errors import ConfigError
from kdlab.methods import create_method
from kdlab.models import create_model


class RecordingTeacher:
    """A frozen model that remembers what it was shown."""

    def __init__(self, model):
        self.model, self.seen = model.eval(), []

    def __call__(self, batch: Batch) -> Outputs:
        self.seen.append(batch.inputs.clone())
        with torch.no_grad():
            return self.model(batch.inputs)


@pytest.fixture(scope="module")
def digits():
    from kdlab.data import load_data

    return load_data("digits")


@pytest.fixture()
def setup(digits):
    torch.manual_seed(0)
    student, t_model = create_model("cnn_tiny", num_classes=10, in_channels=1), create_model("cnn_tiny", 10, 1)
    batch = next(iter(Loader(digits.train, 32, shuffle=True, seed=0)))
    return digits, student, RecordingTeacher(t_model), batch


def _pixels(x, d):
    return x * d.train.std.view(1, -1, 1, 1) + d.train.mean.view(1, -1, 1, 1)


@pytest.mark.parametrize("target", ["labels", "teacher"])
def test_examples_stay_in_the_ball_and_the_range_and_the_teacher_sees_clean_inputs(setup, target):
    d, student, teacher, batch = setup
    adv = Adversarial(Distiller(student, teacher, [create_method("kd")]), d.train.mean, d.train.std, eps=0.1,
                      steps=3, target=target)
    adv.prepare(batch, DataInfo(10, len(d.train), d.input_shape))
    x_adv = adv.perturb(batch)
    p, pa = _pixels(batch.inputs, d), _pixels(x_adv, d)
    assert float((pa - p.clamp(0, 1)).abs().max()) <= 0.1 + 1e-5
    assert float(pa.min()) >= -1e-5 and float(pa.max()) <= 1 + 1e-5
    assert float((pa - p).abs().max()) > 0.05  # it moved
    teacher.seen.clear()
    out, terms = adv(batch)
    assert torch.equal(teacher.seen[-1], batch.inputs)  # the teacher answered the clean batch
    assert set(terms) == {"kd"} and all(torch.isfinite(v) for v in terms.values())
    assert student.training  # crafting ran in eval mode and restored training mode


def test_eps_zero_is_the_inner_trainable(setup):
    d, student, teacher, batch = setup
    inner = Distiller(student, teacher, [create_method("kd")])
    adv = Adversarial(inner, d.train.mean, d.train.std, eps=0.0, steps=2)
    student.eval()  # no BatchNorm statistics update between the two calls
    _, a = adv(batch)
    _, b = inner(batch)
    for k in b:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5)


def test_teacher_target_needs_a_teacher(setup):
    d, student, _, _ = setup
    with pytest.raises(ConfigError, match="adversarial.target=teacher"):
        Adversarial(Distiller(student, None, [create_method("ce")]), d.train.mean, d.train.std, target="teacher")


def test_train_adversarial_cli_runs_and_records_the_section(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from kdlab.cli.main import _register, app

    _register()
    out = tmp_path / "r"
    res = CliRunner().invoke(app, ["train", "--data", "digits", "--model", "cnn_tiny", "--epochs", "1",
                                   "--adversarial", "pgd", "--adv-eps", "0.05", "--adv-steps", "2", "--out", str(out),
                                   "--quiet", "report=false"])
    assert res.exit_code == 0, res.output
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["adversarial"] == {"attack": "pgd", "eps": 0.05, "steps": 2, "step_size": None, "target": "labels"}
    assert (out / "best.safetensors").is_file()
