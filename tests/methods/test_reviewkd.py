import numpy as np
import pytest
import torch

from kdlab.core import Batch, DataInfo, Outputs
from kdlab.engine.distiller import Distiller
from kdlab.errors import IncompatibleError
from kdlab.methods import create_method, hyperparameters, paper
from kdlab.methods.reviewkd import ABF, ReviewKD, hcl_loss
from kdlab.models import create_model

INFO = DataInfo(num_classes=10, num_train=100, input_shape=(3, 32, 32))


def outputs(shapes, seed, grad):
    g = torch.Generator().manual_seed(seed)
    f = {k: torch.randn(*v, generator=g) for k, v in shapes.items()}
    if grad:
        f = {k: v.requires_grad_() for k, v in f.items()}
    b = next(iter(f.values())).shape[0]
    return Outputs(torch.zeros(b, 10), f)


def cnn_shapes(b, widths, sizes, preact=True):
    out = {}
    for i, (c, h) in enumerate(zip(widths, sizes), 1):
        out[f"layer{i}"] = (b, c, h, h)
        if preact:
            out[f"layer{i}_preact"] = (b, c, h, h)
    out["pooled"] = (b, widths[-1])
    return out


def np_pool(x, l):
    b, c, h, w = x.shape
    return x.reshape(b, c, l, h // l, l, w // l).mean(axis=(3, 5))


def ref_hcl(fs, ft, levels=(4, 2, 1)):
    total = 0.0
    for s, t in zip(fs, ft):
        s, t = np.asarray(s, dtype=np.float64), np.asarray(t, dtype=np.float64)
        terms, weights = [np.mean((s - t) ** 2)], [1.0]
        w = 1.0
        for l in levels:
            if l >= s.shape[2]:
                continue
            w /= 2
            terms.append(np.mean((np_pool(s, l) - np_pool(t, l)) ** 2))
            weights.append(w)
        total += sum(a * b for a, b in zip(terms, weights)) / sum(weights)
    return total


def test_defaults_and_paper():
    hp = hyperparameters("reviewkd")
    assert hp["weight"] == 1.0 and hp["warmup_epochs"] == 20 and hp["hcl_levels"] == (4, 2, 1)
    assert hp["teacher_preact"] is True and hp["student_preact"] is False and hp["mid_channels"] == 512
    assert paper("reviewkd").startswith("Distilling Knowledge via Knowledge Review")


def test_pinned_hcl_against_explicit_computation():
    g = torch.Generator().manual_seed(61)
    fs = [torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 4, 4, 4, generator=g),
          torch.randn(2, 5, 1, 1, generator=g)]
    ft = [torch.randn(*f.shape, generator=g) for f in fs]
    assert hcl_loss(fs, ft).item() == pytest.approx(ref_hcl([f.numpy() for f in fs], [f.numpy() for f in ft]), rel=1e-5)


def test_pinned_hcl_hand_value():
    # one 2×2 level: full MSE = 1 (diff ±1), 1×1 pooled diff = 0 -> (1 + 0.5·0) / 1.5
    s = torch.tensor([[[[1.0, -1.0], [1.0, -1.0]]]])
    assert hcl_loss([s], [torch.zeros_like(s)]).item() == pytest.approx(2 / 3)


def test_hcl_invariants():
    g = torch.Generator().manual_seed(62)
    a, b = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    assert hcl_loss([a], [a.clone()]).item() == 0.0
    assert hcl_loss([2 * a], [2 * b]).item() == pytest.approx(4 * hcl_loss([a], [b]).item(), rel=1e-5)
    # spatially constant maps: every pyramid level equals the full MSE
    c, d = a.mean((2, 3), keepdim=True).expand(-1, -1, 8, 8), b.mean((2, 3), keepdim=True).expand(-1, -1, 8, 8)
    assert hcl_loss([c], [d]).item() == pytest.approx(torch.mean((c - d) ** 2).item(), rel=1e-5)


def test_abf_fusion_matches_manual_computation():
    torch.manual_seed(0)
    abf = ABF(3, 4, 5, fuse=True).eval()
    x = torch.randn(2, 3, 4, 4)
    res = torch.randn(2, 4, 2, 2)
    out, new_res = abf(x, res, (4, 4))
    assert out.shape == (2, 5, 4, 4) and new_res.shape == (2, 4, 4, 4)
    W1 = abf.conv1[0].weight.detach().numpy()[:, :, 0, 0]
    Wa = abf.att_conv[0].weight.detach().numpy()[:, :, 0, 0]
    ba = abf.att_conv[0].bias.detach().numpy()
    xn, rn = x.numpy().astype(np.float64), res.numpy().astype(np.float64)
    x1 = np.einsum("oc,bchw->bohw", W1, xn) / np.sqrt(1 + 1e-5)  # fresh BN in eval: (x − 0)/√(1 + eps)
    y = rn.repeat(2, axis=2).repeat(2, axis=3)  # nearest 2×2 → 4×4
    z = 1 / (1 + np.exp(-(np.einsum("oc,bchw->bohw", Wa, np.concatenate([x1, y], 1)) + ba[None, :, None, None])))
    fused = x1 * z[:, :1] + y * z[:, 1:]
    np.testing.assert_allclose(new_res.detach().numpy(), fused, rtol=1e-4, atol=1e-5)


def test_structure_and_sizes_heterogeneous():
    # 28-input student (7×7 deepest) vs 32-input teacher (8×8), different widths and depths
    s = outputs(cnn_shapes(2, (4, 8, 16), (28, 14, 7)), 0, True)
    t = outputs(cnn_shapes(2, (6, 12, 24, 48), (32, 16, 8, 4)), 1, False)
    m = ReviewKD()
    m.prepare(s, t, INFO)
    assert m.pairs == [("layer1", "layer2_preact"), ("layer2", "layer3_preact"), ("layer3", "layer4_preact"),
                       ("pooled", "pooled")]
    outs = m.fused(s)
    assert [tuple(o.shape) for o in outs] == [(2, 12, 16, 16), (2, 24, 8, 8), (2, 48, 4, 4), (2, 48, 1, 1)]
    assert m.abfs[0].conv1[0].out_channels == 16  # min(512, deepest student level's channels)
    assert m.abfs[-1].att_conv is None and all(a.att_conv is not None for a in m.abfs[:-1])


def test_warmup_schedule():
    shapes = cnn_shapes(2, (4, 8), (8, 4))
    s, t = outputs(shapes, 0, True), outputs(shapes, 1, False)
    m = ReviewKD(warmup_epochs=20)
    m.prepare(s, t, INFO)
    full = hcl_loss(m.fused(s), [t.features["layer1_preact"], t.features["layer2_preact"],
                                 t.features["pooled"][:, :, None, None]]).item()
    assert m(s, t, Batch(torch.zeros(2)))["reviewkd"].item() == pytest.approx(full / 20, rel=1e-5)
    m.set_progress(9, 100)
    assert m(s, t, Batch(torch.zeros(2)))["reviewkd"].item() == pytest.approx(full / 2, rel=1e-5)
    m.set_progress(50, 100)
    assert m(s, t, Batch(torch.zeros(2)))["reviewkd"].item() == pytest.approx(full, rel=1e-5)
    assert ReviewKD(warmup_epochs=0).warmup_factor() == 1.0


def test_gradients_reach_student_and_abfs_teacher_untouched():
    s = outputs(cnn_shapes(2, (4, 8, 16), (8, 4, 2)), 0, True)
    t = outputs(cnn_shapes(2, (6, 12, 24), (8, 4, 2)), 1, False)
    before = {k: v.clone() for k, v in t.features.items()}
    m = ReviewKD()
    m.prepare(s, t, INFO)
    m(s, t, Batch(torch.zeros(2)))["reviewkd"].backward()
    for k in ("layer1", "layer2", "layer3", "pooled"):
        assert s.features[k].grad is not None and s.features[k].grad.abs().sum() > 0
    for n, p in m.abfs.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
    for k, v in t.features.items():
        assert torch.equal(v, before[k]) and not v.requires_grad and v.grad is None


def test_incompatible():
    s = outputs({"layer1": (2, 32), "layer2": (2, 16), "pooled": (2, 16)}, 0, True)
    t = outputs(cnn_shapes(2, (8, 16), (8, 4)), 1, False)
    with pytest.raises(IncompatibleError, match=r"ReviewKD .*'layer1:layer1_preact'.*\(2, 32\).*\(2, 8, 8, 8\)"):
        ReviewKD().prepare(s, t, INFO)
    s2 = outputs(cnn_shapes(2, (4, 8), (8, 4)), 0, True)
    t2 = outputs(cnn_shapes(2, (8, 16), (8, 4), preact=False), 1, False)
    with pytest.raises(IncompatibleError, match="teacher_preact=False"):
        ReviewKD().prepare(s2, t2, INFO)
    ReviewKD(teacher_preact=False).prepare(s2, t2, INFO)


def test_trains_through_the_distiller_with_real_models():
    torch.manual_seed(0)
    student = create_model("cnn_tiny", num_classes=10, image_size=16)
    teacher = create_model("cnn_small", num_classes=10, image_size=16).eval()

    def teach(batch):
        with torch.no_grad():
            return teacher(batch.inputs)

    d = Distiller(student, teach, [create_method("reviewkd")])
    batch = Batch(torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,)))
    d.prepare(batch, INFO)
    d.set_progress(0, 1)
    _, terms = d(batch)
    terms["reviewkd"].backward()
    assert torch.isfinite(terms["reviewkd"])
    assert all(p.grad is not None for p in d.methods[0].abfs.parameters())
