import pytest
import torch

from kdlab.core import Batch, Outputs
from kdlab.methods import create_method
from kdlab.methods.mae import mae_loss


def test_mae_by_hand():
    assert float(mae_loss(torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[0.0, 4.0], [1.0, -1.0]]))) == \
        pytest.approx((1 + 2 + 1 + 1) / 4)
    m = create_method("mae", weight=0.5)
    out = m(Outputs(torch.ones(2, 3)), Outputs(torch.zeros(2, 3)), Batch(torch.zeros(2, 1)))
    assert float(out["mae"]) == pytest.approx(0.5)
