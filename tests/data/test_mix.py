"""mixup / cutmix as a pure function of (seed, sample, view): teacher and student see the same
mixed image, a cache keyed by (index, view) serves it, CE follows the mixed labels."""
import pytest
import torch
import torch.nn.functional as F

from kdlab.core import Batch, Outputs
from kdlab.data import Loader, load_data
from kdlab.data.augment import Augment, mix, mix_params
from kdlab.methods import create_method


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", mix="mixup")


def test_partner_and_lambda_are_a_pure_function_of_seed_sample_view():
    idx, v = torch.arange(500), torch.full((500,), 3)
    cfg = Augment(mix="mixup", mix_alpha=0.4)
    p1, l1 = mix_params(idx, v, 7, 1000, cfg)
    p2, l2 = mix_params(idx.flip(0), v, 7, 1000, cfg)  # batch order does not matter
    assert torch.equal(p1, p2.flip(0)) and torch.equal(l1, l2.flip(0))
    p3, _ = mix_params(idx, v + 1, 7, 1000, cfg)
    assert (p3 != p1).float().mean() > 0.9 and ((p1 >= 0) & (p1 < 1000)).all()
    # Beta(0.4, 0.4) is U-shaped: most λ near 0 or 1; Beta(1, 1) is uniform
    assert ((l1 < 0.1) | (l1 > 0.9)).float().mean() > 0.4
    _, lu = mix_params(torch.arange(4000), torch.zeros(4000, dtype=torch.long), 0, 10, Augment(mix="mixup"))
    assert abs(float(lu.mean()) - 0.5) < 0.02 and abs(float(((lu > 0.25) & (lu < 0.75)).float().mean()) - 0.5) < 0.03


def test_cutmix_lambda_is_the_share_of_pixels_kept():
    x, px = torch.zeros(64, 1, 8, 8), torch.ones(64, 1, 8, 8)
    idx, v = torch.arange(64), torch.zeros(64, dtype=torch.long)
    cfg = Augment(pad=0, flip=False, mix="cutmix")
    _, lam = mix_params(idx, v, 0, 100, cfg)
    out, kept = mix(x, px, lam, idx, v, 0, cfg)
    assert torch.allclose(kept, 1 - out.flatten(1).mean(1))
    with pytest.raises(ValueError, match="cutmix pastes image boxes"):
        mix(torch.zeros(4, 6), torch.ones(4, 6), torch.full((4,), 0.5), idx[:4], v[:4], 0, cfg)


def test_loader_mixes_and_replays_the_same_view(digits):
    a = next(iter(Loader(digits.train, 32, shuffle=True, seed=3, augment=digits.augment)))
    b = next(iter(Loader(digits.train, 32, shuffle=True, seed=3, augment=digits.augment)))
    assert a.mix is not None and torch.equal(a.inputs, b.inputs) and torch.equal(a.mix[1], b.mix[1])
    partner, lam = a.mix
    assert a.index is not None and partner is not None
    plain = digits.train.gather(a.index)
    p_idx, _ = mix_params(a.index, a.view, 3, len(digits.train), digits.augment)
    expected = lam.view(-1, 1, 1, 1) * plain + (1 - lam.view(-1, 1, 1, 1)) * digits.train.gather(p_idx)
    assert torch.allclose(a.inputs, expected, atol=1e-6)  # digits: no crop, so the view is the mix alone
    assert torch.equal(partner, digits.train.y[p_idx])


def test_ce_on_mixed_inputs_is_the_mixed_cross_entropy(digits):
    batch = next(iter(Loader(digits.train, 16, shuffle=True, seed=0, augment=digits.augment)))
    logits = torch.randn(16, 10)
    partner, lam = batch.mix
    got = create_method("ce")(Outputs(logits), None, batch)["ce"]
    want = (lam * F.cross_entropy(logits, batch.targets, reduction="none")
            + (1 - lam) * F.cross_entropy(logits, partner, reduction="none")).mean()
    assert torch.allclose(got, want)
    assert torch.allclose(create_method("ce")(Outputs(logits), None, Batch(batch.inputs, batch.targets))["ce"],
                          F.cross_entropy(logits, batch.targets))


def test_cache_serves_mixed_views_exactly_like_the_live_teacher(tmp_path):
    from kdlab.models import create_model
    from kdlab.teachers.cache_build import CacheSpec, cache_for_run
    from kdlab.teachers.frozen import FrozenTeacher

    data = load_data("digits", mix="cutmix", augment=True)
    torch.manual_seed(0)
    live = FrozenTeacher(create_model("cnn_tiny", 10, 1, 8))
    ct, loader = cache_for_run(CacheSpec(dir=str(tmp_path / "c"), views=3), data, live, batch_size=64, seed=5,
                               log=None)
    for epoch in (0, 1, 4):
        loader.set_epoch(epoch)
        b = next(iter(loader))
        assert b.mix is not None
        assert torch.allclose(ct(b).logits, live(b).logits, atol=1e-5), epoch
    other = load_data("digits", mix="mixup", augment=True)  # another mix: the cache is stale and rebuilt
    from kdlab.store import read_manifest
    from kdlab.teachers.cache_build import identity, mismatches

    assert mismatches(read_manifest(tmp_path / "c"), identity(live, other))
