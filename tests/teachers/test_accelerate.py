"""A live teacher run through ONNX Runtime / BN folding: same outputs, only the features the methods read."""
from __future__ import annotations

import pytest
import torch

from kdlab.api import run
from kdlab.config import load_config
from kdlab.core import Batch
from kdlab.data import load_data
from kdlab.models import create_model
from kdlab.teachers import FrozenTeacher
from kdlab.teachers.accelerate import AcceleratedTeacher, accelerate_live, features_needed
from tests.conftest import trained_like_bn


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", split_seed=0)


def _teacher() -> FrozenTeacher:
    torch.manual_seed(0)
    return FrozenTeacher(trained_like_bn(create_model("cnn_small", 10, 1, 8)))


def test_features_needed():
    avail = ["layer1", "layer2", "pooled"]
    assert features_needed([frozenset({"logits"}), frozenset()], avail) == []
    assert features_needed([frozenset({"logits"}), frozenset({"pooled"})], avail) == ["pooled"]
    assert features_needed([frozenset({"features:*"})], avail) == avail
    assert features_needed([frozenset({"attention"})], avail) is None  # eager runs, the method explains


@pytest.mark.parametrize("mode", ["onnx", "fold_bn"])
def test_live_pass_agrees_with_eager_and_keeps_gradients_possible(digits, mode):
    t = _teacher()
    x = digits.train.gather(torch.arange(40))
    fast = accelerate_live(t, Batch(x), [frozenset({"logits"}), frozenset({"features:*"})], mode)
    assert isinstance(fast, AcceleratedTeacher) and fast.mode == mode and fast.module is t.module
    ref, got = t(Batch(x)), fast(Batch(x))
    torch.testing.assert_close(got.logits, ref.logits, rtol=1e-4, atol=1e-4)
    assert set(got.features) == set(ref.features)
    for k in ref.features:
        torch.testing.assert_close(got.features[k], ref.features[k], rtol=1e-4, atol=1e-4)
    # the outputs can be saved by a loss's backward (no inference tensors)
    s = torch.randn(40, 10, requires_grad=True)
    (s.log_softmax(1) * got.logits.softmax(1)).sum().backward()
    assert s.grad is not None
    assert accelerate_live(t, Batch(x), [frozenset({"logits"})], "eager") is t


def test_a_teacher_that_cannot_take_the_inputs_is_left_to_the_distillers_check(digits):
    """The shape problem is reported by the Distiller (IncompatibleError naming the inputs), not here."""
    from kdlab.api import run
    from kdlab.errors import IncompatibleError

    torch.manual_seed(0)
    wrong = FrozenTeacher(create_model("mlp_tiny", 10, 1, 12))  # expects 1x12x12 inputs; digits are 8x8
    x = Batch(digits.train.gather(torch.arange(8)))
    assert accelerate_live(wrong, x, [frozenset({"logits"})], "auto") is wrong
    cfg = load_config(base={"data": {"name": "digits"}, "student": {"name": "mlp_tiny"},
                            "methods": [{"name": "ce"}, {"name": "kd"}], "train": {"epochs": 1}, "report": False})
    with pytest.raises(IncompatibleError, match="teacher cannot take this dataset's inputs"):
        run(cfg, data=digits, teacher=wrong, save=False, progress=False)


def test_logit_methods_export_no_features(digits):
    fast = accelerate_live(_teacher(), Batch(digits.train.gather(torch.arange(8))), [frozenset({"logits"})], "onnx")
    assert fast(Batch(digits.train.gather(torch.arange(8)))).features == {}


def test_a_disagreeing_pass_is_not_used(digits, monkeypatch):
    import kdlab.teachers.accelerate as acc

    t = _teacher()
    real = acc.fold_batchnorm

    def wrong(module):  # a broken fold: every weight scaled
        m = real(module)
        with torch.no_grad():
            for p in m.parameters():
                p.mul_(1.5)
        return m

    monkeypatch.setattr(acc, "fold_batchnorm", wrong)
    msgs: list[str] = []
    out = accelerate_live(t, Batch(digits.train.gather(torch.arange(16))), [frozenset({"logits"})], "fold_bn",
                          log=msgs.append)
    assert out is t and any("disagrees" in m for m in msgs)


def test_run_uses_the_accelerated_teacher_and_matches_eager(digits, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    import kdlab.teachers.accelerate as acc

    used: list[object] = []
    real = acc.accelerate_live
    monkeypatch.setattr(acc, "accelerate_live", lambda *a, **k: used.append(real(*a, **k)) or used[-1])
    t = _teacher()
    save_file(t.module.state_dict(), str(tmp_path / "t.safetensors"))
    results = {}
    for mode in ("eager", "auto"):
        cfg = load_config(base={"data": {"name": "digits"}, "student": {"name": "cnn_tiny"},
                                "teacher": {"model": {"name": "cnn_small"}, "weights": str(tmp_path / "t.safetensors"),
                                            "accelerate": mode},
                                "methods": [{"name": "ce", "weight": 0.1}, {"name": "kd", "weight": 0.9},
                                            {"name": "fitnet"}],
                                "train": {"epochs": 2, "batch_size": 64}, "report": False})
        results[mode] = run(cfg, data=digits, save=False, progress=False)
    assert isinstance(used[0], FrozenTeacher) and isinstance(used[1], AcceleratedTeacher) and used[1].mode == "onnx"
    e, a = results["eager"].history, results["auto"].history
    for re, ra in zip(e, a):  # the teacher's outputs differ by float rounding only
        assert ra["train_kd"] == pytest.approx(re["train_kd"], rel=1e-3)
        assert ra["train_fitnet"] == pytest.approx(re["train_fitnet"], rel=1e-3)
    with pytest.raises(Exception, match="accelerate"):
        load_config(base={"teacher": {"checkpoint": "x", "accelerate": "fast"}})
