import torch

from kdlab.schemes.unlabeled import MixedLoader, split_labeled, unlabeled

from .conftest import FAST


def test_split_is_stratified_and_pool_has_no_labels(digits):
    lab, pool = split_labeled(digits, 0.05, seed=0)
    assert pool.y is None
    n = len(digits.train)
    assert len(lab.train) + len(pool) == n
    ids = torch.cat([lab.train.index, pool.index])
    assert torch.equal(ids.sort().values, torch.arange(n))
    assert set(lab.train.y.tolist()) == set(range(10)) and set(lab.val.y.tolist()) == set(range(10))
    assert abs(len(lab.train) - 0.05 * n) <= 10
    assert torch.equal(lab.train.y, digits.train.y[lab.train.index])
    assert len(lab.val) < len(digits.val) and torch.equal(lab.test.y, digits.test.y)


def test_mixed_loader_unlabeled_batches_carry_no_targets(digits):
    lab, pool = split_labeled(digits, 0.1, seed=0)
    loader = MixedLoader(lab.train, pool, 32, seed=0)
    loader.set_epoch(1)
    batches = list(loader)
    assert len(batches) == len(loader)
    labeled = [b for b in batches if b.targets is not None]
    unl = [b for b in batches if b.targets is None]
    assert labeled and unl
    lab_ids = set(lab.train.index.tolist())
    assert all(set(b.index.tolist()) <= lab_ids for b in labeled)
    assert all(not (set(b.index.tolist()) & lab_ids) for b in unl)
    for b in labeled:  # labels are those of the ids
        assert torch.equal(b.targets, digits.train.y[b.index])
    kinds = [b.targets is None for b in batches]
    assert kinds != sorted(kinds)  # interleaved, not all labeled first


def test_unlabeled_run(digits):
    r = unlabeled("mlp_tiny", "mlp_tiny", digits, labeled=0.1, epochs=2, baseline=True, **FAST)
    e = r.extra
    assert e["labeled"] + e["pool"] == len(digits.train)
    assert e["labeled_epochs"] > 2  # step-matched: more epochs over the small labeled part
    assert 0 < e["teacher_acc"] <= 1 and 0 < e["baseline_acc"] <= 1 and r.test["acc"] > 0.2
