import pytest
import torch

from kdlab.data import Loader, load_data

FAST = {"batch_size": 64}


@pytest.fixture(scope="session")
def digits():
    return load_data("digits", split_seed=0)


@pytest.fixture()
def batch(digits):
    return next(iter(Loader(digits.train, 32, shuffle=True, seed=0)))


def params_grad(module: torch.nn.Module) -> float:
    return float(sum(p.grad.abs().sum() for p in module.parameters() if p.grad is not None))
