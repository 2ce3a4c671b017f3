import json

import pytest
import torch
import yaml

from kdlab.api import scheme, train
from kdlab.engine.loop import Schedule, fit
from kdlab.errors import ConfigError, IncompatibleError
from kdlab.methods import create_method
from kdlab.models import create_model
from kdlab.schemes.self_distill import SelfDistiller, SelfDistillOptions, SnapshotDistiller

from .conftest import FAST


def _sd(name="self-distill", **kw):
    return scheme(name, kw.pop("data"), train=FAST, **kw)


def test_kind_defaults_of_alpha_and_T():
    assert SelfDistillOptions().alpha_T() == (0.3, 3.0)  # byot
    assert SelfDistillOptions(kind="born-again").alpha_T() == (0.9, 4.0)
    assert SelfDistillOptions(kind="snapshot").alpha_T() == (0.5, 4.0)
    assert SelfDistillOptions(kind="snapshot", alpha=0.2, T=2).alpha_T() == (0.2, 2.0)
    methods, a, t = SelfDistillOptions(kind="snapshot").objective()
    assert methods == [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "T": 4.0}] and (a, t) == (0.5, 4.0)
    methods, a, t = SelfDistillOptions(kind="born-again", method="at").objective()  # no logit method: paper weights
    assert [m["name"] for m in methods] == ["ce", "at"] and (a, t) == (None, None)
    with pytest.raises(ConfigError, match="alpha"):
        SelfDistillOptions(kind="born-again", method="at", alpha=0.5).objective()


def test_byot_builds_an_exit_per_shallow_stage_and_teaches_from_the_deepest(digits, batch):
    torch.manual_seed(0)
    sd = SelfDistiller(create_model("cnn_tiny", 10, 1, 8))
    sd.prepare(batch, digits.info)
    assert list(sd.heads) == ["layer1", "layer2"] and sd.deep_key == "layer3"
    out, terms = sd(batch)
    assert {"ce", "layer1/ce", "layer1/kd", "layer1/hint", "layer2/kd"} <= set(terms)
    # the exit's distillation reaches the shallow stage but not the deepest classifier (its target)
    terms["layer1/kd"].backward(retain_graph=True)
    m = sd.student
    assert m.stages[0][0].weight.grad.abs().sum() > 0
    assert m.fc.weight.grad is None or m.fc.weight.grad.abs().sum() == 0
    assert m.stages[2][1].weight.grad is None or m.stages[2][1].weight.grad.abs().sum() == 0
    # without labels only the distillation terms remain
    batch.targets = None
    assert all(not k.endswith("ce") for k in sd(batch)[1])


def test_byot_needs_stages(digits, batch):
    sd = SelfDistiller(create_model("mlp_tiny", 10, 1, 8))  # a single hidden layer: nothing shallower
    with pytest.raises(IncompatibleError, match="two stage features"):
        sd.prepare(batch, digits.info)


def test_byot_keeps_the_heads_of_the_best_epoch_also_across_a_reload(digits, batch):
    torch.manual_seed(0)
    accs = iter([0.9])  # what validate answers for the epoch a reload did not observe
    sd = SelfDistiller(create_model("cnn_tiny", 10, 1, 8), validate=lambda m: next(accs))
    sd.prepare(batch, digits.info)

    def nudge():
        with torch.no_grad():
            for p in sd.heads.parameters():
                p.add_(1.0)

    heads = lambda: {k: v.clone() for k, v in sd.heads.state_dict().items()}  # noqa: E731
    sd.observe(0, 0.5)
    nudge()
    sd.observe(1, 0.7)
    best = heads()
    nudge()
    saved = sd.state_dict()  # saved after epoch 2, before it was observed
    fresh = SelfDistiller(create_model("cnn_tiny", 10, 1, 8), validate=lambda m: next(accs))
    fresh.prepare(batch, digits.info)
    fresh.load_state_dict(saved)
    assert fresh.observed == 1 and fresh.best_epoch == 1
    epoch2 = {k: v.clone() for k, v in fresh.heads.state_dict().items()}
    fresh.set_progress(3, 5)  # resumed at epoch 3: epoch 2 is observed with validate's 0.9, the best
    assert fresh.observed == 2 and fresh.best_epoch == 2
    with torch.no_grad():
        for p in fresh.heads.parameters():
            p.add_(1.0)
    fresh.restore_best_heads(2)
    assert all(torch.equal(fresh.heads.state_dict()[k], v) for k, v in epoch2.items())
    sd.restore_best_heads(1)
    assert all(torch.equal(sd.heads.state_dict()[k], v) for k, v in best.items())


def test_byot_run_reports_every_exit(digits):
    r = _sd(data=digits, kind="byot", model="cnn_tiny", epochs=2)
    ex = r.extra["exits"]
    assert set(ex) == {"layer1", "layer2", "final", "ensemble"}
    assert ex["final"] == pytest.approx(r.test["acc"]) and r.test["acc"] > 0.5
    assert r.extra["alpha"] == 0.3 and r.extra["T"] == 3.0


def test_born_again_generations_are_stages_and_the_last_is_the_run(digits, tmp_path):
    out = tmp_path / "ban"
    r = _sd(data=digits, kind="born-again", model="mlp_tiny", generations=2, epochs=2, out=str(out))
    gens = r.extra["generations"]
    assert [g["generation"] for g in gens] == [0, 1, 2]
    assert gens[-1]["test_acc"] == pytest.approx(r.test["acc"])
    assert 0 <= r.extra["ensemble_acc"] <= 1 and all(g["test_acc"] > 0.3 for g in gens)
    assert r.run_dir == out
    for run, stage in ((out / "gen0", "gen0"), (out / "gen1", "gen1"), (out, None)):
        names = {p.name for p in run.iterdir()}
        assert {"config.yaml", "metrics.jsonl", "best.safetensors", "last.safetensors", "state.pt",
                "summary.json"} <= names, run
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert cfg.get("stage") == stage
        assert cfg["scheme"] == {"name": "self-distill", **SelfDistillOptions(
            kind="born-again", model="mlp_tiny", generations=2).model_dump(mode="json")}
    assert not (out / "gen2").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["extra"]["generations"] == gens
    stage_acc = json.loads((out / "gen1" / "summary.json").read_text())["test"]["acc"]
    assert stage_acc == pytest.approx(gens[1]["test_acc"])


def test_born_again_from_a_given_teacher(digits, tmp_path):
    t = train("mlp_tiny", digits, epochs=1, out=str(tmp_path / "t"), batch_size=64)
    r = _sd(data=digits, kind="born-again", model="mlp_tiny", generations=1, epochs=1,
            teacher=str(tmp_path / "t" / "best"))
    assert [g["generation"] for g in r.extra["generations"]] == [1]
    assert 0 < t.test["acc"] <= 1


def test_bad_options_are_one_line_config_errors(digits):
    with pytest.raises(ConfigError, match=r"unknown key 'scheme.alhpa'.*did you mean 'scheme.alpha'"):
        _sd(data=digits, kind="byot", alhpa=0.5, epochs=1)
    with pytest.raises(ConfigError, match="scheme.kind"):
        _sd(data=digits, kind="born_again", epochs=1)
    with pytest.raises(ConfigError, match="nope"):
        _sd(data=digits, kind="born-again", model="nope", epochs=1)
    with pytest.raises(ConfigError, match="at_epoch"):
        _sd(data=digits, kind="snapshot", model="mlp_tiny", epochs=3, at_epoch=3)


def test_snapshot_teacher_is_a_frozen_bit_identical_copy_of_the_student_at_that_epoch(digits):
    torch.manual_seed(0)
    student = create_model("cnn_tiny", 10, 1, 8)
    sd = SnapshotDistiller(student, [create_method("ce", weight=0.5), create_method("kd", weight=0.5)], at_epoch=2)
    seen: dict[int, dict] = {}
    terms_per_epoch: dict[int, set] = {}

    def grab(epoch, rec):
        seen[epoch] = {k: v.clone() for k, v in student.state_dict().items()}
        terms_per_epoch[epoch] = {k for k in rec if k.startswith("train_")}

    fit(sd, digits, Schedule(epochs=4, batch_size=64), progress=False, on_epoch_end=grab)
    t = sd.teacher.module
    assert sd.snapshot_epoch == 2 and t is not student
    assert all(not p.requires_grad for p in t.parameters()) and not t.training
    snap = t.state_dict()
    assert all(torch.equal(snap[k], v) for k, v in seen[1].items())  # weights after 2 epochs, untouched since
    assert any(not torch.equal(snap[k], v) for k, v in student.state_dict().items())  # the student moved on
    assert "train_kd" not in terms_per_epoch[1] and "train_kd" in terms_per_epoch[3]

    # the snapshot is part of the trainable's state: a reloaded trainable has the same teacher
    again = SnapshotDistiller(create_model("cnn_tiny", 10, 1, 8), [create_method("ce", weight=0.5),
                                                                   create_method("kd", weight=0.5)], at_epoch=2)
    again.load_state_dict(sd.state_dict())
    assert again.snapshot_epoch == 2 and again.teacher is not None
    assert all(torch.equal(again.teacher.module.state_dict()[k], v) for k, v in snap.items())
    again.set_progress(3, 4)  # no second snapshot
    assert all(torch.equal(again.teacher.module.state_dict()[k], v) for k, v in snap.items())


def test_snapshot_run(digits):
    r = _sd(data=digits, kind="snapshot", model="mlp_tiny", epochs=3, at_epoch=1)
    assert r.extra["snapshot_epoch"] == 1 and 0 < r.extra["teacher_acc"] <= 1
    assert (r.extra["alpha"], r.extra["T"]) == (0.5, 4.0)
    assert "train_kd" not in r.history[0] and "train_kd" in r.history[2]
