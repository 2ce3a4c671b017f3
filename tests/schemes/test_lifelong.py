import json

import pytest
import torch

from kdlab.api import scheme
from kdlab.errors import ConfigError
from kdlab.models import create_model
from kdlab.schemes.lifelong import LwF, expand
from kdlab.teachers.frozen import FrozenTeacher

from .conftest import FAST


def test_expanded_model_keeps_old_logits_and_adds_new_ones(batch):
    torch.manual_seed(0)
    old = create_model("cnn_tiny", 3, 1, 8)
    m = expand(old, [7, 1, 4], [0, 2], 10, batch.inputs)
    with torch.no_grad():
        old.eval()
        m.eval()
        z = m(batch.inputs).logits
        assert torch.allclose(z[:, [7, 1, 4]], old(batch.inputs).logits)
    assert (z[:, [3, 5, 6, 8, 9]] == -1e4).all()
    assert m.backbone is not old  # a copy: the old model stays as it was


def test_lwf_distills_old_head_and_never_touches_the_old_model(batch):
    torch.manual_seed(0)
    old = create_model("mlp_tiny", 5, 1, 8)
    before = {k: v.clone() for k, v in old.state_dict().items()}
    m = expand(old, range(5), range(5, 10), 10, batch.inputs)
    trainable = LwF(m, FrozenTeacher(old), T=2.0, weight=1.0)
    keep = batch.targets >= 5
    batch.inputs, batch.targets, batch.index = batch.inputs[keep], batch.targets[keep], batch.index[keep]
    _, terms = trainable(batch)
    assert set(terms) == {"ce", "lwf"} and float(terms["lwf"].detach()) == pytest.approx(0.0, abs=1e-6)
    sum(terms.values()).backward()
    assert all(torch.equal(v, before[k]) for k, v in old.state_dict().items())
    assert all(p.grad is None for p in old.parameters())


def test_lifelong_reports_old_and_new_accuracy_with_and_without_distillation(digits, tmp_path):
    out = tmp_path / "lwf"
    r = scheme("lifelong", digits, epochs=2, out=str(out), train=FAST, model="mlp_tiny", old_classes=[0, 1, 2, 3, 4],
               old_epochs=2, baseline=True)
    for name in ("lwf", "finetune"):
        acc = r.extra[name]
        assert {"old_acc", "new_acc", "old_acc_task_aware", "new_acc_task_aware", "all_acc"} <= set(acc)
        assert all(0 <= v <= 1 for v in acc.values())
    assert r.extra["new_classes"] == [5, 6, 7, 8, 9] and r.extra["before"]["old_acc"] > 0.5
    assert "train_lwf" in r.history[-1]
    assert r.test["acc"] == pytest.approx(r.extra["lwf"]["all_acc"])  # the full test set, every class
    for d in (out, out / "old", out / "finetune"):
        assert {"config.yaml", "metrics.jsonl", "best.safetensors", "last.safetensors", "state.pt",
                "summary.json"} <= {p.name for p in d.iterdir()}, d
    ft = json.loads((out / "finetune" / "summary.json").read_text())
    assert ft["test"]["acc"] == pytest.approx(r.extra["finetune"]["all_acc"])
    assert "train_lwf" not in json.loads((out / "finetune" / "metrics.jsonl").read_text().splitlines()[-1])
    old = json.loads((out / "old" / "summary.json").read_text())
    assert old["epochs"] == 2
    assert json.loads((out / "summary.json").read_text())["extra"]["lwf"] == r.extra["lwf"]

    # the old model given as a checkpoint: no old/ stage, the same model before the new task
    r2 = scheme("lifelong", digits, epochs=1, out=str(tmp_path / "ckpt"), train=FAST, model=str(out / "old" / "best"),
                baseline=False)
    assert r2.extra["before"] == r.extra["before"] and "finetune" not in r2.extra
    assert not (tmp_path / "ckpt" / "old").exists()


def test_lifelong_refuses_bad_class_lists_and_unknown_options(digits):
    with pytest.raises(ConfigError, match="overlap"):
        scheme("lifelong", digits, model="mlp_tiny", old_classes=[0, 1], new_classes=[1, 2])
    with pytest.raises(ConfigError, match="outside"):
        scheme("lifelong", digits, model="mlp_tiny", old_classes=[0, 12])
    with pytest.raises(ConfigError, match="scheme.lambda_o") as e:
        scheme("lifelong", digits, model="mlp_tiny", lambda_o=2.0)
    assert "\n" not in str(e.value)
