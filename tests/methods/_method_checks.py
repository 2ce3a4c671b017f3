"""Small shared checks for the method tests."""
from __future__ import annotations

import torch
from torch import Tensor

from kdlab.core import Batch, Method, Outputs


def leaf(x: Tensor) -> Tensor:
    return x.detach().clone().requires_grad_(True)


def frozen(x: Tensor) -> Tensor:
    return x.detach().clone()


def total(terms: dict[str, Tensor]) -> Tensor:
    assert terms, "the method returned no loss terms"
    return sum(terms.values())  # type: ignore[return-value]


def check_gradients(method: Method, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
    """Backward through the method: every student tensor that requires grad gets a finite, non-zero
    gradient; every teacher tensor stays bit-identical and never gets a grad. Returns the terms."""
    before = None
    if teacher is not None:
        before = (teacher.logits.clone(), {k: v.clone() for k, v in teacher.features.items()})
    terms = method(student, teacher, batch)
    for k, v in terms.items():
        assert v.dim() == 0, k
        assert torch.isfinite(v), k
    total(terms).backward()
    for name, x in [("logits", student.logits), *student.features.items()]:
        if x.requires_grad:
            assert x.grad is not None, f"no gradient reached student {name}"
            assert torch.isfinite(x.grad).all()
            assert x.grad.abs().sum() > 0, f"zero gradient on student {name}"
    if teacher is not None:
        assert before is not None
        assert not teacher.logits.requires_grad and teacher.logits.grad is None
        assert torch.equal(teacher.logits, before[0])
        for k, v in teacher.features.items():
            assert not v.requires_grad and v.grad is None, k
            assert torch.equal(v, before[1][k]), k
    return terms


def check_connectors_train(method: Method) -> None:
    """Every parameter the method owns received a gradient (call after check_gradients)."""
    params = list(method.named_parameters())
    assert params, "expected trainable connectors"
    for name, p in params:
        assert p.grad is not None and p.grad.abs().sum() > 0, f"connector {name} got no gradient"
