import numpy as np
import pytest
import torch
from torch import nn

from kdlab.core import Batch, DataInfo, Outputs
from kdlab.errors import IncompatibleError
from kdlab.methods import hyperparameters, paper
from kdlab.methods.ab import AB, ab_loss

INFO = DataInfo(num_classes=10, num_train=100, input_shape=(3, 32, 32))


def pair(s_shapes, t_shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = {k: torch.randn(*v, generator=g).requires_grad_() for k, v in s_shapes.items()}
    t = {k: torch.randn(*v, generator=g) for k, v in t_shapes.items()}
    b = next(iter(s.values())).shape[0]
    return Outputs(torch.zeros(b, 10), s), Outputs(torch.zeros(b, 10), t)


def ref_ab(s, t, mu=1.0):
    """Σ over neurons of the paper's alternative loss, divided by the batch size."""
    s, t = np.asarray(s, dtype=np.float64), np.asarray(t, dtype=np.float64)
    total = 0.0
    for idx in np.ndindex(s.shape):
        if t[idx] > 0:  # teacher neuron active: push the student above +μ
            total += max(mu - s[idx], 0.0) ** 2 if s[idx] <= mu else 0.0
        else:  # inactive: push it below −μ
            total += (s[idx] + mu) ** 2 if s[idx] > -mu else 0.0
    return total / s.shape[0]


def test_defaults_and_paper():
    assert hyperparameters("ab") == {"margin": 1.0, "weight": 3e-3, "layers": None, "init_epochs": None}
    assert paper("ab").startswith("Knowledge Transfer via Distillation of Activation Boundaries")


@pytest.mark.parametrize("mu", [1.0, 0.5, 0.0])
def test_pinned_value_against_explicit_loop(mu):
    g = torch.Generator().manual_seed(31)
    s, t = 1.5 * torch.randn(3, 2, 3, 3, generator=g), torch.randn(3, 2, 3, 3, generator=g)
    assert ab_loss(s, t, mu).item() == pytest.approx(ref_ab(s.numpy(), t.numpy(), mu), rel=1e-5)


def test_pinned_hand_value():
    s = torch.tensor([[0.0, 2.0, -0.5, 0.5]])
    t = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    # (0−1)² + 0 + (−0.5+1)² + (0.5+1)² = 1 + 0.25 + 2.25
    assert ab_loss(s, t).item() == pytest.approx(3.5)


def test_invariants():
    g = torch.Generator().manual_seed(32)
    t = torch.randn(2, 3, 4, 4, generator=g)
    t = t + t.sign()  # |t| >= 1 everywhere
    assert ab_loss(t.clone(), t).item() == 0.0  # student = teacher beyond the margin
    s = torch.randn(2, 3, 4, 4, generator=g)
    assert ab_loss(s, 5 * t).item() == pytest.approx(ab_loss(s, t).item())  # only the teacher's sign matters
    assert ab_loss(torch.zeros_like(t), t).item() == pytest.approx(t[0].numel())  # μ² per neuron
    assert ab_loss(s, t).item() >= 0


def test_method_layer_weights_and_identity_connectors():
    shapes = {"layer1_preact": (2, 3, 4, 4), "layer2_preact": (2, 4, 2, 2), "layer3_preact": (2, 5, 1, 1)}
    s, t = pair(shapes, shapes)
    m = AB(weight=1.0)
    m.prepare(s, t, INFO)
    assert m.pairs == [("layer1_preact", "layer1_preact"), ("layer2_preact", "layer2_preact"),
                       ("layer3_preact", "layer3_preact")]
    assert all(isinstance(c, nn.Identity) for c in m.connectors)
    got = m(s, t, Batch(torch.zeros(2)))["ab"].item()
    S = {k: v.detach().numpy() for k, v in s.features.items()}
    ref = sum(w * ref_ab(S[k], t.features[k].numpy()) for w, k in zip((0.25, 0.5, 1.0), shapes))
    assert got == pytest.approx(ref, rel=1e-5)


def test_gradients_reach_student_and_connectors_teacher_untouched():
    s, t = pair({"layer1_preact": (4, 3, 7, 7), "layer2_preact": (4, 6, 4, 4)},
                {"layer1_preact": (4, 5, 8, 8), "layer2_preact": (4, 7, 4, 4)})
    before = {k: v.clone() for k, v in t.features.items()}
    m = AB()
    m.prepare(s, t, INFO)
    m(s, t, Batch(torch.zeros(4)))["ab"].backward()
    for k in s.features:
        assert s.features[k].grad is not None and s.features[k].grad.abs().sum() > 0
    for p in m.connectors.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    for k, v in t.features.items():
        assert torch.equal(v, before[k]) and not v.requires_grad and v.grad is None


def test_init_epochs_switches_the_term_off():
    shapes = {"layer1_preact": (2, 3, 4, 4)}
    s, t = pair(shapes, shapes)
    m = AB(init_epochs=1)
    m.prepare(s, t, INFO)
    m.set_progress(0, 5)
    assert "ab" in m(s, t, Batch(torch.zeros(2)))
    m.set_progress(1, 5)
    assert m(s, t, Batch(torch.zeros(2))) == {}


def test_incompatible():
    # an MLP student has no pre-activation maps
    s, t = pair({"layer1": (2, 32)}, {"layer1": (2, 8, 8, 8), "layer1_preact": (2, 8, 8, 8)})
    with pytest.raises(IncompatibleError, match=r"AB needs .*'layer1_preact'.*student"):
        AB().prepare(s, t, INFO)
    s2, t2 = pair({"layer1_preact": (2, 32)}, {"layer1_preact": (2, 8, 8, 8)})
    with pytest.raises(IncompatibleError, match=r"AB .*'layer1_preact'.*\(2, 32\).*\(2, 8, 8, 8\)"):
        AB().prepare(s2, t2, INFO)
