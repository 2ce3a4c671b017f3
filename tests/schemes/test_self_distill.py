import pytest
import torch

from kdlab.engine.loop import Schedule, fit
from kdlab.errors import ConfigError, IncompatibleError
from kdlab.methods import create_method
from kdlab.models import create_model
from kdlab.schemes.self_distill import SelfDistiller, SnapshotDistiller, born_again, byot, snapshot_distill

from .conftest import FAST


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


def test_byot_run_reports_every_exit(digits):
    r = byot("cnn_tiny", digits, epochs=2, **FAST)
    ex = r.extra["exits"]
    assert set(ex) == {"layer1", "layer2", "final", "ensemble"}
    assert ex["final"] == pytest.approx(r.test["acc"]) and r.test["acc"] > 0.5


def test_born_again_generations(digits):
    r = born_again("mlp_tiny", digits, generations=2, epochs=2, **FAST)
    gens = r.extra["generations"]
    assert [g["generation"] for g in gens] == [0, 1, 2]
    assert gens[-1]["test_acc"] == pytest.approx(r.test["acc"])
    assert 0 <= r.extra["ensemble_acc"] <= 1 and all(g["test_acc"] > 0.3 for g in gens)
    with pytest.raises(ConfigError):
        born_again(create_model("mlp_tiny", 10, 1, 8), digits)


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


def test_snapshot_distill_api(digits):
    r = snapshot_distill("mlp_tiny", digits, epochs=3, at_epoch=1, **FAST)
    assert r.extra["snapshot_epoch"] == 1 and 0 < r.extra["teacher_acc"] <= 1
    with pytest.raises(ConfigError):
        snapshot_distill("mlp_tiny", digits, epochs=3, at_epoch=3)
