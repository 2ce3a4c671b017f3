"""Offline teacher logits for tokens: the top-k cache round trip (exact top-k probabilities, the
tail mass kept, k = V gives back the full distribution) and bytes per token."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kdlab.core import Batch
from kdlab.data import Loader
from kdlab.data.text import load_text
from kdlab.models import create_model
from kdlab.teachers.frozen import FrozenTeacher
from kdlab.teachers.token_cache import TokenCacheTeacher, build_token_cache, bytes_per_token


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("tc")
    (d / "c.txt").write_text("\n\n".join(f"line {i}: the quick brown fox {i * 7}" for i in range(30)))
    data = load_text("text", str(d / "c.txt"), seq_len=12, val_fraction=0.2)
    torch.manual_seed(0)
    teacher = FrozenTeacher(create_model("gpt", 256, layers=1, width=16, heads=2, context=12))
    return d, data, teacher


def _batch(data, n=5) -> Batch:
    return next(iter(Loader(data.train, n)))


@pytest.mark.parametrize("k", [4, 32])
def test_topk_round_trip_keeps_the_top_k_and_the_tail(setup, k):
    d, data, teacher = setup
    path = build_token_cache(teacher, data.train, d / f"top{k}", k, vocab=256, batch_size=7)
    ct = TokenCacheTeacher(path)
    b = _batch(data)
    live = torch.log_softmax(teacher(b).logits.float(), -1)
    back = torch.log_softmax(ct(b).logits, -1)
    assert back.shape == live.shape
    top = live.topk(k, -1)
    # the k largest log-probabilities come back at their ids (float16 storage: ~1e-3 relative)
    torch.testing.assert_close(back.gather(-1, top.indices), top.values, atol=2e-3, rtol=1e-3)
    # the tail keeps its mass, spread evenly over the other V - k tokens
    tail_live = 1 - top.values.exp().sum(-1)
    rest = back.exp().scatter(-1, top.indices, 0.0)
    torch.testing.assert_close(rest.sum(-1), tail_live, atol=2e-3, rtol=1e-3)
    assert ct(b).mask is not None and torch.equal(ct(b).mask, b.inputs["loss_mask"])
    assert ct.bytes_per_token == bytes_per_token(k, 256) == k * 4 + 4
    ct.close()


def test_full_k_gives_the_teacher_distribution_back(setup):
    d, data, teacher = setup
    path = build_token_cache(teacher, data.train, d / "full", 256, vocab=256, dtype="float32")
    ct = TokenCacheTeacher(path)
    b = _batch(data)
    torch.testing.assert_close(torch.log_softmax(ct(b).logits, -1), torch.log_softmax(teacher(b).logits, -1),
                               atol=1e-5, rtol=1e-5)
    # memory-mapped .npy files readable without kdlab
    arr = np.load(path / "topk_values.npy", mmap_mode="r")
    assert arr.shape == (len(data.train), 12, 256)
    ct.close()
