import pytest
import torch
import yaml
from typer.testing import CliRunner

from kdlab.api import scheme
from kdlab.cli.common import class_list
from kdlab.cli.main import _register, app
from kdlab.core import Batch, Outputs
from kdlab.errors import ConfigError
from kdlab.schemes._common import restrict
from kdlab.schemes.amalgamate import UnionTeacher

from .conftest import FAST

_register()


class Fixed:
    def __init__(self, logits):
        self.logits = torch.tensor(logits, dtype=torch.float32)

    def __call__(self, batch):
        return Outputs(self.logits.clone())


B = Batch(torch.zeros(2, 1, 8, 8), None, torch.arange(2))


def test_union_teacher_places_each_teachers_logits_at_its_classes():
    a = Fixed([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])  # classes 4, 0, 2 (any order)
    b = Fixed([[7.0, 8.0], [9.0, 10.0]])  # classes 3, 1
    z = UnionTeacher([(a, [4, 0, 2]), (b, [3, 1])], 5)(B).logits
    assert torch.equal(z[:, [4, 0, 2]], a.logits) and torch.equal(z[:, [3, 1]], b.logits)
    lp = UnionTeacher([(a, [4, 0, 2]), (b, [3, 1])], 5, combine="logprob")(B).logits
    assert torch.allclose(lp[:, [4, 0, 2]].exp().sum(1), torch.ones(2))
    assert torch.allclose(lp.softmax(1)[:, [3, 1]].sum(1), torch.full((2,), 0.5))  # equal mass per teacher


def test_union_teacher_rejects_overlap_and_gaps():
    a, b = Fixed([[0.0, 0.0]]), Fixed([[0.0, 0.0]])
    with pytest.raises(ConfigError, match="disjoint"):
        UnionTeacher([(a, [0, 1]), (b, [1, 2])], 3)
    with pytest.raises(ConfigError, match="covers"):
        UnionTeacher([(a, [0, 1]), (b, [2, 3])], 5)


def test_restrict_remaps_labels_to_positions(digits):
    sub = restrict(digits, [7, 2, 5], remap=True)
    assert sub.num_classes == 3 and sub.classes == ["7", "2", "5"]
    orig = digits.train.y[torch.isin(digits.train.y, torch.tensor([7, 2, 5]))]
    assert torch.equal(torch.tensor([7, 2, 5])[sub.train.y], orig)
    assert torch.equal(sub.train.x, digits.train.x[torch.isin(digits.train.y, torch.tensor([7, 2, 5]))])
    kept = restrict(digits, [7, 2], remap=False)
    assert set(kept.test.y.tolist()) == {2, 7} and kept.num_classes == 10


def test_amalgamate_trains_the_union_student_without_labels(digits, monkeypatch):
    import kdlab.schemes._common as common

    seen = {}
    real = common.run_trainable

    def spy(trainable, data, schedule, opts, **k):
        seen[opts.command] = (data.train.y, k["use_best"])
        return real(trainable, data, schedule, opts, **k)

    monkeypatch.setattr(common, "run_trainable", spy)
    r = scheme("amalgamate", digits, epochs=2, train=FAST, teachers=["cnn_tiny", "mlp_tiny"],
               classes=[[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]], student="mlp_tiny", baseline=True)
    assert sorted(seen) == ["amalgamate", "amalgamate:baseline", "amalgamate:teacher0", "amalgamate:teacher1"]
    assert seen["amalgamate"] == (None, False)  # the student's training split carries no labels; last epoch kept
    assert seen["amalgamate:baseline"][0] is not None and seen["amalgamate:baseline"][1] is False
    assert set(seen["amalgamate:teacher1"][0].tolist()) == set(range(5))  # a teacher's labels are renumbered
    assert [t["classes"] for t in r.extra["teachers"]] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert all(t["test_acc_own_classes"] > 0.5 for t in r.extra["teachers"])
    assert r.extra["union_teacher_acc"] > 0.3 and r.test["acc"] > 0.3 and "baseline_acc" in r.extra
    assert "train_ce" not in r.history[-1] and "train_kd" in r.history[-1]


def test_amalgamate_refuses_bad_class_lists_before_training(digits):
    with pytest.raises(ConfigError, match="disjoint"):
        scheme("amalgamate", digits, epochs=1, classes=[[0, 1, 2, 3, 4], [4, 5, 6, 7, 8, 9]])
    with pytest.raises(ConfigError, match="2 teachers but 3 class lists"):
        scheme("amalgamate", digits, epochs=1, classes=[[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]])
    with pytest.raises(ConfigError, match="scheme.classes"):
        scheme("amalgamate", digits, epochs=1, classes=[["a", 1]])


def test_cli_class_lists():
    assert class_list("0-4", "--split") == [0, 1, 2, 3, 4] and class_list("0-2,7", "--split") == [0, 1, 2, 7]
    with pytest.raises(ConfigError, match="bad class list"):
        class_list("a-b", "--split")


def test_yaml_config_with_class_lists_and_overrides(tmp_path):
    config = {"data": {"name": "digits"}, "train": {"epochs": 1, "batch_size": 64}, "report": False,
              "out": str(tmp_path / "run"),
              "scheme": {"name": "amalgamate", "teachers": ["mlp_tiny", "mlp_tiny", "mlp_tiny"],
                         "classes": [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]], "student": "mlp_tiny"}}
    path = tmp_path / "am.yaml"
    path.write_text(yaml.safe_dump(config))
    r = CliRunner().invoke(app, ["amalgamate", str(path), "scheme.baseline=false", "scheme.combine=logprob", "--quiet"])
    assert r.exit_code == 0, r.output
    run = tmp_path / "run"
    saved = yaml.safe_load((run / "config.yaml").read_text())["scheme"]
    assert saved["classes"] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]] and saved["combine"] == "logprob"
    assert saved["baseline"] is False and saved["T"] == 4.0
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ["teacher0", "teacher1", "teacher2"]
    assert "combined (logprob)" in r.output
    config["scheme"]["clases"] = config["scheme"].pop("classes")
    path.write_text(yaml.safe_dump(config))
    bad = CliRunner().invoke(app, ["amalgamate", str(path), "--quiet"])
    assert isinstance(bad.exception, ConfigError), bad.output
    assert "'scheme.clases'" in str(bad.exception) and "\n" not in str(bad.exception)
