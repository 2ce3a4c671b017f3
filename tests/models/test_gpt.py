"""Causal LMs: the built-in GPT (KV cache = full forward, seeded sampling) and Hugging Face causal
LMs from tiny random GPT-2 / Llama configs (no weights downloaded), loaded from a local directory."""
from __future__ import annotations

import pytest
import torch

from kdlab.core import Outputs
from kdlab.models import create_model, takes_tokens
from kdlab.models._causal import sample


def _inputs(ids):
    m = torch.ones_like(ids, dtype=torch.bool)
    return {"input_ids": ids, "attention_mask": m, "loss_mask": m}


def test_gpt_forward_shapes_and_mask():
    torch.manual_seed(0)
    m = create_model("gpt", 50, layers=2, width=32, heads=4, context=24)
    assert takes_tokens("gpt") and not takes_tokens("mlp")
    ids = torch.randint(0, 50, (3, 10))
    lm = torch.zeros(3, 10, dtype=torch.bool)
    lm[:, 4:] = True
    out = m({"input_ids": ids, "attention_mask": torch.ones_like(lm), "loss_mask": lm})
    assert isinstance(out, Outputs) and out.logits.shape == (3, 10, 50) and out.features["hidden"].shape == (3, 10, 32)
    assert torch.equal(out.mask, lm)
    out.logits.sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    with pytest.raises(ValueError, match="context 24"):
        m(torch.randint(0, 50, (1, 25)))


def test_gpt_is_causal():
    torch.manual_seed(0)
    m = create_model("gpt", 30, layers=2, width=16, heads=2, context=16).eval()
    a = torch.randint(0, 30, (1, 8))
    b = a.clone()
    b[0, 5:] = (b[0, 5:] + 1) % 30
    torch.testing.assert_close(m(a).logits[:, :5], m(b).logits[:, :5])


def test_kv_cache_matches_the_full_forward():
    torch.manual_seed(0)
    m = create_model("gpt", 40, layers=2, width=32, heads=4, context=32).eval()
    ids = torch.randint(0, 40, (2, 12))
    full = m(ids).logits
    a, cache = m.decode(ids[:, :5], None)
    b, cache = m.decode(ids[:, 5:6], cache)
    c, cache = m.decode(ids[:, 6:12], cache)
    torch.testing.assert_close(torch.cat([a, b, c], 1), full, atol=1e-5, rtol=1e-5)


def test_sampling_is_deterministic_under_a_seed():
    torch.manual_seed(0)
    m = create_model("gpt", 40, layers=1, width=16, heads=2, context=32)
    p = torch.randint(0, 40, (3, 4))
    s1 = sample(m, p, 12, torch.Generator().manual_seed(7))
    s2 = sample(m, p, 12, torch.Generator().manual_seed(7))
    s3 = sample(m, p, 12, torch.Generator().manual_seed(8))
    assert s1.shape == (3, 16) and torch.equal(s1, s2) and not torch.equal(s1, s3)
    assert torch.equal(s1[:, :4], p)
    greedy = sample(m, p, 5, torch.Generator().manual_seed(0), temperature=0)
    assert torch.equal(greedy, sample(m, p, 5, torch.Generator().manual_seed(99), temperature=0))


def _tiny_hf(kind: str, vocab: int = 64):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if kind == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=vocab, n_layer=2, n_embd=32, n_head=2, n_positions=64,
                                      bos_token_id=0, eos_token_id=0)
        return transformers.GPT2LMHeadModel(cfg)
    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return transformers.LlamaForCausalLM(cfg)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_hf_causal_lm_from_a_local_directory(tmp_path, kind):
    hf = _tiny_hf(kind)
    hf.save_pretrained(tmp_path / kind, safe_serialization=True)
    m = create_model("hf-causal", 64, path=str(tmp_path / kind)).eval()
    ids = torch.randint(0, 64, (2, 9))
    out = m(_inputs(ids))
    assert out.logits.shape == (2, 9, 64) and out.mask is not None
    torch.testing.assert_close(out.logits, hf.eval()(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
    # the model's own KV cache: incremental logits = the full forward
    a, cache = m.decode(ids[:, :4], None)
    b, cache = m.decode(ids[:, 4:5], cache)
    torch.testing.assert_close(b[:, 0], out.logits[:, 4], atol=1e-4, rtol=1e-4)
    s1 = sample(m, ids[:, :3], 6, torch.Generator().manual_seed(1))
    assert torch.equal(s1, sample(m, ids[:, :3], 6, torch.Generator().manual_seed(1)))


def test_hf_causal_refuses_another_vocabulary(tmp_path):
    from kdlab.errors import ConfigError

    _tiny_hf("gpt2").save_pretrained(tmp_path / "g", safe_serialization=True)
    with pytest.raises(ConfigError, match="predicts 64 tokens but the data's tokenizer has 256"):
        create_model("hf-causal", 256, path=str(tmp_path / "g"))
    with pytest.raises(ConfigError, match="not a local Hugging Face model directory"):
        create_model("hf-causal", 64, path=str(tmp_path / "nothing"))
