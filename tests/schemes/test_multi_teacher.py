import pytest
import torch

from kdlab.core import Batch, Outputs
from kdlab.errors import ConfigError
from kdlab.schemes.assistant import teacher_assistant
from kdlab.schemes.multi_teacher import multi_teacher
from kdlab.teachers.ensemble import EnsembleTeacher

from .conftest import FAST


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


def test_multi_teacher_run_with_logits_and_features_from_different_teachers(digits):
    r = multi_teacher(["cnn_tiny", "mlp_tiny"], "cnn_tiny", digits, method="kd+fitnet", logits_from=[1],
                      features_from=[0], epochs=2, **FAST)
    assert len(r.extra["teachers"]) == 2 and 0 < r.extra["ensemble_acc"] <= 1
    assert "train_fitnet" in r.history[-1] and "train_kd" in r.history[-1]
    assert r.test["acc"] > 0.3


def test_teacher_assistant_chain(digits):
    r = teacher_assistant("cnn_small", ["cnn_tiny"], "mlp_tiny", digits, epochs=2, direct=True, **FAST)
    chain = r.extra["chain"]
    assert [c["role"] for c in chain] == ["teacher", "assistant0", "student"]
    assert [c["model"] for c in chain] == ["cnn_small", "cnn_tiny", "mlp_tiny"]
    assert chain[-1]["test_acc"] == pytest.approx(r.test["acc"]) and 0 < r.extra["direct_acc"] <= 1
    with pytest.raises(ConfigError):
        teacher_assistant("cnn_small", [], "mlp_tiny", digits)
