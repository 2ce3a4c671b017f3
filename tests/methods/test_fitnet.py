import numpy as np
import pytest
import torch
from torch import nn

from kdlab.core import Batch, DataInfo, Outputs
from kdlab.engine.distiller import Distiller
from kdlab.errors import IncompatibleError
from kdlab.methods import create_method, hyperparameters, paper
from kdlab.methods.fitnet import FitNet, fitnet_loss
from kdlab.models import create_model

INFO = DataInfo(num_classes=10, num_train=100, input_shape=(3, 32, 32))


def pair(s_shapes, t_shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = {k: torch.randn(*v, generator=g).relu().requires_grad_() for k, v in s_shapes.items()}
    t = {k: torch.randn(*v, generator=g).relu() for k, v in t_shapes.items()}
    b = next(iter(s.values())).shape[0]
    return Outputs(torch.zeros(b, 10), s), Outputs(torch.zeros(b, 10), t)


def test_defaults_and_paper():
    assert hyperparameters("fitnet") == {"hint_layer": None, "weight": 100.0, "kernel_size": 1}
    assert paper("fitnet").startswith("FitNets: Hints for Thin Deep Nets")


def test_pinned_value_against_explicit_loop():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 3, 2, 2, generator=g), torch.randn(2, 3, 2, 2, generator=g)
    an, bn = a.double().numpy(), b.double().numpy()
    total, n = 0.0, 0
    for i in np.ndindex(an.shape):
        total += (an[i] - bn[i]) ** 2
        n += 1
    assert fitnet_loss(a, b).item() == pytest.approx(total / n, rel=1e-6)
    # a hand-computable value: difference of 1 everywhere
    assert fitnet_loss(torch.ones(2, 2, 3, 3), torch.zeros(2, 2, 3, 3)).item() == pytest.approx(1.0)


def test_method_value_with_known_regressor():
    s, t = pair({"layer2": (2, 3, 4, 4)}, {"layer2": (2, 3, 4, 4)})
    m = FitNet(weight=2.0)
    m.prepare(s, t, INFO)
    m.regressor = nn.Identity()
    out = m(s, t, Batch(torch.zeros(2)))
    expected = 2.0 * ((s.features["layer2"].detach() - t.features["layer2"]) ** 2).mean()
    assert out["fitnet"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_invariants_zero_at_match_and_quadratic_scaling():
    x = torch.randn(2, 4, 3, 3)
    assert fitnet_loss(x, x.clone()).item() == 0.0
    y = torch.randn(2, 4, 3, 3)
    assert fitnet_loss(3 * x, 3 * y).item() == pytest.approx(9 * fitnet_loss(x, y).item(), rel=1e-5)
    assert fitnet_loss(x, y).item() == pytest.approx(fitnet_loss(y, x).item())


def test_default_hint_is_the_middle_stage_of_each_side():
    s, t = pair({"layer1": (2, 4, 8, 8), "layer2": (2, 8, 4, 4), "layer3": (2, 16, 2, 2)},
                {"layer1": (2, 8, 16, 16), "layer2": (2, 16, 8, 8), "layer3": (2, 32, 4, 4), "layer4": (2, 64, 2, 2)})
    m = FitNet()
    m.prepare(s, t, INFO)
    assert m.pair == ("layer2", "layer2")
    m2 = FitNet(hint_layer="layer3:layer4")
    m2.prepare(s, t, INFO)
    assert m2.pair == ("layer3", "layer4")


def test_gradients_reach_student_and_regressor_teacher_untouched():
    # channel and spatial mismatch (7x7 student vs 8x8 teacher)
    s, t = pair({"layer1": (4, 3, 14, 14), "layer2": (4, 5, 7, 7)},
                {"layer1": (4, 6, 16, 16), "layer2": (4, 12, 8, 8)})
    before = {k: v.clone() for k, v in t.features.items()}
    m = FitNet()
    m.prepare(s, t, INFO)
    loss = sum(m(s, t, Batch(torch.zeros(4))).values())
    loss.backward()
    assert m.pair == ("layer1", "layer1")  # the middle of two stages is the first
    g = s.features["layer1"].grad
    assert g is not None and g.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.regressor.parameters())
    for k, v in t.features.items():
        assert torch.equal(v, before[k]) and not v.requires_grad and v.grad is None


def test_two_d_features_get_a_linear_regressor():
    s, t = pair({"layer1": (4, 6)}, {"layer1": (4, 9)})
    m = FitNet(hint_layer="layer1")
    m.prepare(s, t, INFO)
    m(s, t, Batch(torch.zeros(4)))["fitnet"].backward()
    assert s.features["layer1"].grad is not None


def test_incompatible_mlp_student_cnn_teacher():
    s, t = pair({"layer1": (2, 32), "layer2": (2, 16)}, {"layer1": (2, 8, 8, 8), "layer2": (2, 16, 4, 4)})
    with pytest.raises(IncompatibleError, match=r"FitNet .*'layer1'.*\(2, 32\).*\(2, 8, 8, 8\)"):
        FitNet().prepare(s, t, INFO)
    with pytest.raises(IncompatibleError, match="needs feature 'layer9'"):
        FitNet(hint_layer="layer9").prepare(s, t, INFO)
    with pytest.raises(IncompatibleError, match="needs a teacher"):
        FitNet().prepare(s, None, INFO)


def test_trains_through_the_distiller_with_real_models():
    torch.manual_seed(0)
    student = create_model("cnn_tiny", num_classes=10, image_size=16)
    teacher = create_model("cnn_small", num_classes=10, image_size=16).eval()

    def teach(batch):
        with torch.no_grad():
            return teacher(batch.inputs)

    d = Distiller(student, teach, [create_method("fitnet")])
    batch = Batch(torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,)))
    d.prepare(batch, INFO)
    opt = torch.optim.SGD([p for p in d.parameters() if p.requires_grad], lr=0.01)
    assert any(n.startswith("methods.0.regressor") for n, _ in d.named_parameters())
    _, terms = d(batch)
    terms["fitnet"].backward()
    opt.step()
    assert torch.isfinite(terms["fitnet"])
