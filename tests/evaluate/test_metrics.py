import pytest
import torch

from kdlab.evaluate.cost import count_flops, count_params, latency_ms, size_on_disk_bytes
from kdlab.evaluate.metrics import classification_metrics, confusion_matrix, expected_calibration_error
from kdlab.models import create_model


def test_macro_metrics_by_hand():
    # targets 0,0,1,1,2 ; predictions 0,1,1,1,0
    y = torch.tensor([0, 0, 1, 1, 2])
    logits = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 1, 0]), 3).float() * 5
    m = classification_metrics(logits, y)
    # class 0: P=1/2 R=1/2; class 1: P=2/3 R=1; class 2: P=0 R=0
    assert m["acc"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    assert m["recall"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert m["f1"] == pytest.approx((0.5 + 0.8 + 0) / 3)
    assert confusion_matrix(logits, y, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_ece_perfect_and_overconfident():
    y = torch.tensor([0, 1, 0, 1])
    confident_right = torch.tensor([[20.0, 0], [0, 20], [20, 0], [0, 20]])
    assert expected_calibration_error(confident_right, y) == pytest.approx(0, abs=1e-6)
    confident_wrong = confident_right.flip(1)
    assert expected_calibration_error(confident_wrong, y) == pytest.approx(1, abs=1e-6)


def test_cost_measures():
    m = create_model("mlp", 10, 1, 8, hidden=(16,))
    assert count_params(m) == 64 * 16 + 16 + 16 * 10 + 10
    assert count_flops(m, (1, 8, 8)) == 2 * (64 * 16 + 16 * 10)
    assert latency_ms(m, (1, 8, 8), 1, repeats=3) > 0
    assert size_on_disk_bytes(m) > count_params(m) * 4
