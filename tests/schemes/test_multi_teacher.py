import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from kdlab.api import scheme, train
from kdlab.cli.main import _register, app
from kdlab.core import Batch, Outputs
from kdlab.errors import ConfigError
from kdlab.methods import create_method
from kdlab.models import create_model
from kdlab.schemes.multi_teacher import EnsembleDistiller
from kdlab.teachers.ensemble import EnsembleTeacher

from .conftest import FAST

_register()


class Fixed:
    """A teacher answering fixed logits (and features)."""

    def __init__(self, logits, features=None):
        self.logits, self.features = torch.tensor(logits, dtype=torch.float32), features or {}

    def __call__(self, batch):
        return Outputs(self.logits.clone(), dict(self.features))


B = Batch(torch.zeros(2, 1, 8, 8), None, torch.arange(2))
# teacher A is sure about sample 0 and unsure about sample 1; teacher B the other way round
A = Fixed([[8.0, 0.0, 0.0], [0.2, 0.0, 0.1]], {"layer1": torch.ones(2, 4)})
Bt = Fixed([[0.1, 0.2, 0.0], [0.0, 0.0, 8.0]], {"layer1": torch.zeros(2, 4), "layer2": torch.ones(2, 3)})


@pytest.mark.parametrize("mode", ["mean", "weights", "confidence", "entropy", "random"])
def test_weights_sum_to_one(mode):
    e = EnsembleTeacher([A, Bt], mode=mode, weights=[3, 1] if mode == "weights" else None)
    out = e(B)
    w = e.last_weights
    assert w.shape == (2, 2) and torch.allclose(w.sum(1), torch.ones(2)) and (w >= 0).all()
    assert out.logits.shape == (2, 3)
    if mode == "weights":
        assert torch.allclose(w, torch.tensor([[0.75, 0.25], [0.75, 0.25]]))
        assert torch.allclose(out.logits, 0.75 * A.logits + 0.25 * Bt.logits)
    if mode == "mean":
        assert torch.allclose(out.logits, (A.logits + Bt.logits) / 2)


@pytest.mark.parametrize("mode", ["confidence", "entropy"])
def test_per_sample_weights_follow_the_confident_teacher(mode):
    e = EnsembleTeacher([A, Bt], mode=mode)
    e(B)
    w = e.last_weights
    assert w[0, 0] > w[0, 1] and w[1, 1] > w[1, 0]
    if mode == "confidence":
        conf = torch.stack([A.logits.softmax(-1).amax(-1), Bt.logits.softmax(-1).amax(-1)], 1)
        assert torch.allclose(w, conf / conf.sum(1, keepdim=True))


def test_random_mode_picks_one_whole_teacher_per_call_and_both_over_time():
    e = EnsembleTeacher([A, Bt], mode="random", seed=3)
    picks = set()
    for _ in range(30):
        out = e(B)
        k = e.last_choice
        picks.add(k)
        assert torch.equal(out.logits, (A, Bt)[k].logits)
        assert torch.equal(e.last_weights[:, k], torch.ones(2))
    assert picks == {0, 1}


def test_probs_combination_is_the_mixture():
    out = EnsembleTeacher([A, Bt], mode="mean", combine="probs")(B)
    mix = (A.logits.softmax(-1) + Bt.logits.softmax(-1)) / 2
    assert torch.allclose(out.logits.softmax(-1), mix, atol=1e-6)


def test_different_knowledge_from_different_teachers():
    out = EnsembleTeacher([A, Bt], logits_from=[0], features_from=[1])(B)
    assert torch.equal(out.logits, A.logits)
    assert torch.equal(out.features["layer1"], torch.zeros(2, 4)) and "layer2" in out.features
    merged = EnsembleTeacher([A, Bt], logits_from=[0, 1], features_from=[1, 0])(B)
    assert torch.equal(merged.features["layer1"], torch.ones(2, 4))  # the later teacher wins a shared name


def test_bad_ensembles():
    with pytest.raises(ConfigError):
        EnsembleTeacher([A, Bt], mode="vote")
    with pytest.raises(ConfigError):
        EnsembleTeacher([A, Bt], mode="weights")
    with pytest.raises(ConfigError):
        EnsembleTeacher([A, Bt], weights=[1.0])
    with pytest.raises(ConfigError):
        EnsembleTeacher([A, Bt], features_from=[2])


def test_ensemble_distiller_keeps_the_random_draws_in_its_state():
    def distiller():
        return EnsembleDistiller(create_model("mlp_tiny", 3, 1, 8), EnsembleTeacher([A, Bt], mode="random", seed=5),
                                 [create_method("ce")])

    d = distiller()
    for _ in range(7):
        d.teacher(B)
    state = d.state_dict()
    ahead = [d.teacher.draw() for _ in range(20)]
    fresh = distiller()
    fresh.load_state_dict(state)
    assert [fresh.teacher.draw() for _ in range(20)] == ahead


def test_multi_teacher_run_with_logits_and_features_from_different_teachers(digits):
    r = scheme("multi-teacher", digits, epochs=2, train=FAST, teachers=["cnn_tiny", "mlp_tiny"], student="cnn_tiny",
               method="kd+fitnet", logits_from=[1], features_from=[0])
    assert [t["model"] for t in r.extra["teachers"]] == ["cnn_tiny", "mlp_tiny"]
    assert 0 < r.extra["ensemble_acc"] <= 1 and r.extra["mode"] == "mean"
    assert "train_fitnet" in r.history[-1] and "train_kd" in r.history[-1]
    assert r.test["acc"] > 0.3


def test_multi_teacher_refuses_a_bad_ensemble_before_training(digits):
    with pytest.raises(ConfigError, match="out of range"):
        scheme("multi-teacher", digits, epochs=1, teachers=["mlp_tiny"], features_from=[3])
    with pytest.raises(ConfigError, match="scheme.mode"):
        scheme("multi-teacher", digits, epochs=1, teachers=["mlp_tiny"], mode="vote")
    with pytest.raises(ConfigError, match="alpha"):
        scheme("multi-teacher", digits, epochs=1, teachers=["mlp_tiny"], method="fitnet", alpha=0.5)


def test_teacher_assistant_chain(digits):
    r = scheme("assistant", digits, epochs=2, train=FAST, teacher="cnn_small", assistants=["cnn_tiny"],
               student="mlp_tiny", direct=True)
    chain = r.extra["chain"]
    assert [c["role"] for c in chain] == ["teacher", "assistant0", "student"]
    assert [c["model"] for c in chain] == ["cnn_small", "cnn_tiny", "mlp_tiny"]
    assert chain[-1]["test_acc"] == pytest.approx(r.test["acc"]) and 0 < r.extra["direct_acc"] <= 1
    with pytest.raises(ConfigError, match="scheme.assistants"):
        scheme("assistant", digits, epochs=1, teacher="cnn_small", assistants=[], student="mlp_tiny")


def test_assistant_with_a_checkpoint_teacher_writes_its_stages(digits, tmp_path):
    train("mlp_tiny", digits, epochs=1, out=str(tmp_path / "t"), batch_size=64)
    out = tmp_path / "ta"
    r = scheme("assistant", digits, epochs=1, train=FAST, out=str(out), teacher=str(tmp_path / "t" / "best"),
               assistants=["mlp_tiny"], student="mlp_tiny", direct=False)
    assert r.extra["chain"][0]["model"] == "mlp_tiny" and 0 < r.extra["chain"][0]["test_acc"] <= 1
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and p.name != "plots") == ["assistant0"]
    for run in (out, out / "assistant0"):
        assert {"config.yaml", "metrics.jsonl", "best.safetensors", "last.safetensors", "state.pt",
                "summary.json"} <= {p.name for p in run.iterdir()}
    assert json.loads((out / "summary.json").read_text())["extra"]["chain"][-1]["role"] == "student"


def _cli(tmp_path, cmd, config, *args):
    path = tmp_path / f"{cmd}.yaml"
    path.write_text(yaml.safe_dump(config))
    return CliRunner().invoke(app, [cmd, str(path), *args, "--quiet"])


@pytest.mark.parametrize("cmd,section,override,stage", [
    ("assistant", {"teacher": "mlp_tiny", "assistants": ["mlp_tiny"], "student": "mlp_tiny", "direct": False},
     ("T", 3.0), "teacher"),
    ("multi-teacher", {"teachers": ["mlp_tiny", "mlp_tiny"], "student": "mlp_tiny"}, ("mode", "confidence"),
     "teacher1"),
])
def test_yaml_config_with_a_scheme_section_and_overrides(tmp_path, cmd, section, override, stage):
    config = {"data": {"name": "digits"}, "train": {"epochs": 1, "batch_size": 64}, "report": False,
              "out": str(tmp_path / "run"), "scheme": {"name": cmd, **section}}
    key, value = override
    r = _cli(tmp_path, cmd, config, f"scheme.{key}={value}")
    assert r.exit_code == 0, r.output
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["scheme"]
    assert saved["name"] == cmd and saved[key] == value and saved["student"] == "mlp_tiny"
    assert "teacher_epochs" in saved and "alpha" in saved  # resolved: every option is recorded
    assert yaml.safe_load((tmp_path / "run" / stage / "config.yaml").read_text())["stage"] == stage
    assert (tmp_path / "run" / stage / "summary.json").is_file()
    bad = _cli(tmp_path, cmd, {**config, "scheme": {**config["scheme"], "studnet": "mlp_tiny"}})
    assert isinstance(bad.exception, ConfigError), bad.output
    msg = str(bad.exception)
    assert "'scheme.studnet'" in msg and "scheme.student" in msg and "\n" not in msg
