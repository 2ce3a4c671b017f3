"""Offline fixtures for the text-classification tests: a labelled CSV of synthetic topic texts and a
tiny randomly initialised BERT encoder + WordPiece tokenizer saved as a local Hugging Face directory."""
from __future__ import annotations

import csv
import random
from pathlib import Path

TOPICS = {"money": "bank market shares profit price trade economy",
          "sport": "goal match team win player league score",
          "tech": "computer software chip phone internet data code"}
FILLER = "the a of and in to".split()


def write_csv(path: Path, n: int = 120, seed: int = 0, text: str = "text", label: str = "label") -> Path:
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([text, label])
        for _ in range(n):
            lab = rng.choice(sorted(TOPICS))
            ws = TOPICS[lab].split() * 2 + FILLER
            w.writerow([" ".join(rng.choice(ws) for _ in range(rng.randint(3, 20))), lab])
    return path


def tiny_hf_dir(path: Path, layers: int = 2, hidden: int = 32, heads: int = 2, seed: int = 0) -> Path:
    """A tiny BERT encoder (random weights, safetensors) and a WordPiece tokenizer over the fixture's words."""
    import torch
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import BertModel, PreTrainedTokenizerFast

    from kdlab.models.hf_encoder import bert_config

    words = sorted({w for t in TOPICS.values() for w in t.split()} | set(FILLER))
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2),
                                                                                                  ("[SEP]", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]")
    path.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(path))
    torch.manual_seed(seed)
    BertModel(bert_config(len(vocab), layers, hidden, heads), add_pooling_layer=False).save_pretrained(str(path))
    return path
