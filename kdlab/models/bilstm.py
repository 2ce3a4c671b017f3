"""A BiLSTM text classifier over word embeddings (Tang et al. 2019, "Distilling Task-Specific
Knowledge from BERT into Simple Neural Networks", arXiv 1903.12136).

Input ``{"input_ids": [B, L], "attention_mask": [B, L]}`` (right-padded); output
``Outputs(logits [B, C], {"pooled": [B, 2H]})``: the max over real tokens of the two directions'
states. Sequences are packed by length, so padding changes no output.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from kdlab.core import Outputs
from kdlab.models import register_model
from kdlab.models.hf_encoder import token_dict


class BiLSTMClassifier(nn.Module):
    def __init__(self, vocab_size: int, num_classes: int, embed: int = 100, hidden: int = 128,
                 layers: int = 1, dropout: float = 0.2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed, padding_idx=0)
        self.lstm = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True, bidirectional=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, num_classes))

    def forward(self, x: Tensor | dict[str, Tensor]) -> Outputs:
        ids, attn = token_dict(x)
        lengths = attn.sum(1).clamp_min(1)
        e = self.dropout(self.embed(ids))
        packed = pack_padded_sequence(e, lengths.cpu(), batch_first=True, enforce_sorted=False)
        h, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=ids.shape[1])
        real = (torch.arange(ids.shape[1], device=ids.device)[None] < lengths[:, None]).unsqueeze(-1)
        pooled = h.masked_fill(~real, float("-inf")).amax(1)
        return Outputs(self.head(self.dropout(pooled)), {"pooled": pooled})


@register_model("bilstm")
def bilstm(num_classes: int, in_channels: int = 3, image_size: int = 32, vocab_size: int = 30000,
           embed: int = 100, hidden: int = 128, layers: int = 1, dropout: float = 0.2) -> nn.Module:
    """A BiLSTM over ``vocab_size`` token ids (the data's tokenizer: ``word`` or a transformer's)."""
    return BiLSTMClassifier(vocab_size, num_classes, embed, hidden, layers, dropout)

setattr(bilstm, "kdlab_inputs", "text")  # see kdlab.models.input_kind
