"""Hugging Face causal language models from a local directory (``AutoModelForCausalLM``)."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdlab.core import Outputs
from kdlab.errors import ConfigError
from kdlab.models import register_model
from kdlab.models._causal import TOKEN_INPUTS, token_inputs

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class HFCausalLM(nn.Module):
    """Wraps a ``transformers`` causal LM to the kdlab contract: ``forward(inputs) -> Outputs(logits
    [B, L, V], {"hidden": last hidden state [B, L, D]}, mask=loss_mask)`` and ``decode`` with the
    model's own KV cache. Labels are never passed to the model, so it never shifts them itself."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        # transformers 5 renamed past_key_values to cache
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    @property
    def vocab(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])  # type: ignore[operator]

    @property
    def context(self) -> int | None:
        """The longest sequence its position embeddings cover (None: not recorded)."""
        cfg = getattr(self.model, "config", None)
        n = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        return int(n) if n else None

    def forward(self, x: Tensor | dict[str, Tensor]) -> Outputs:
        ids, attn, loss_mask = token_inputs(x)
        out = self.model(input_ids=ids, attention_mask=None if attn is None else attn.long(), use_cache=False,
                         output_hidden_states=True)
        return Outputs(out.logits, {"hidden": out.hidden_states[-1]}, loss_mask if loss_mask is not None else attn)

    def decode(self, ids: Tensor, cache: Any) -> tuple[Tensor, Any]:
        out = self.model(input_ids=ids, use_cache=True, **{self._cache_kw: cache})
        return out.logits, out.get("cache", out.get("past_key_values"))


def load_hf_causal(path: str | Path, dtype: str = "float32") -> HFCausalLM:
    """A causal LM from a local directory: safetensors weights only, no remote code, no download."""
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        raise ConfigError("Hugging Face models need transformers: pip install 'kdlab[hf]'") from None
    p = Path(path)
    if not (p / "config.json").is_file():
        raise ConfigError(f"{path} is not a local Hugging Face model directory (no config.json)")
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    try:
        m = AutoModelForCausalLM.from_pretrained(str(p), local_files_only=True, use_safetensors=True,
                                                 trust_remote_code=False, dtype=DTYPES[dtype])
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load {path} as a causal LM: {str(e).splitlines()[0]}") from None
    return HFCausalLM(m)


@register_model("hf-causal")
def hf_causal(num_classes: int, in_channels: int = 3, image_size: int = 32, path: str = "",
              dtype: str = "float32") -> nn.Module:
    """``path``: a local model directory. ``num_classes`` must equal its output vocabulary size
    (a mismatch is refused: see :func:`kdlab.models.hf_causal.check_vocab`)."""
    if not path:
        raise ConfigError("model hf-causal needs path=<local model directory>")
    m = load_hf_causal(path, dtype)
    if m.vocab != num_classes:
        raise ConfigError(f"{path} predicts {m.vocab} tokens but the data's tokenizer has {num_classes}; "
                          "use that model's tokenizer (data.options.tokenizer) or configure an alignment")
    return m


setattr(hf_causal, "kdlab_inputs", TOKEN_INPUTS)
