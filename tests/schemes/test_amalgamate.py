import pytest
import torch

from kdlab.core import Batch, Outputs
from kdlab.errors import ConfigError
from kdlab.schemes._common import restrict
from kdlab.schemes.amalgamate import UnionTeacher, amalgamate

from .conftest import FAST


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
    import kdlab.schemes.amalgamate as am

    seen = []
    real = am.finish

    def spy(trainable, data, *a, **k):
        seen.append(data.train.y)
        return real(trainable, data, *a, **k)

    monkeypatch.setattr(am, "finish", spy)
    r = amalgamate(["cnn_tiny", "mlp_tiny"], [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]], "mlp_tiny", digits, epochs=2,
                   baseline=True, **FAST)
    assert seen[0] is None  # the student's training split carries no labels
    assert [t["classes"] for t in r.extra["teachers"]] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert all(t["test_acc_own_classes"] > 0.5 for t in r.extra["teachers"])
    assert r.extra["union_teacher_acc"] > 0.3 and r.test["acc"] > 0.3 and "baseline_acc" in r.extra
    assert "train_ce" not in r.history[-1] and "train_kd" in r.history[-1]
