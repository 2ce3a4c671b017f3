"""Token-level distillation of a causal language model into a smaller one (``kdlab lm-distill``).

Stages, each its own run directory under the scheme's (same layout, resumable):

* ``teacher/``: a registered token model (``gpt``) trained here on the corpus, unless the teacher
  is a kdlab checkpoint or a local Hugging Face model (``hf:<dir>``);
* ``baseline/``: the student trained alone on the same tokens for the same steps (``scheme.baseline``);
* the scheme's directory: the student distilled with ``scheme.loss`` (``fkl``, ``rkl``, ``jsd``,
  ``skl``, ``tv``; weight ``alpha``, cross-entropy on the labels at ``1 − alpha``).

On-policy distillation (GKD, Agarwal et al., ICLR 2024): with ``scheme.lmbda`` > 0 that fraction
of batches is replaced by sequences the student samples itself (KV cache) from the first
``scheme.prompt`` tokens of the batch's sequences; the teacher scores them and only the sampled
tokens are learned. The draw and the samples come from a generator seeded by (seed, epoch, the
batch's first sample id), so a run is deterministic and a resumed run replays the same samples.
This lives in the trainable (:class:`OnPolicy`): the loop knows nothing about it.

Offline teacher logits (``scheme.offline_topk``): the teacher's top-k log-probabilities per token
are written once to ``<out>/teacher-top<k>/`` (memory-mapped, tail mass kept) and the student
trains from them without running the teacher.

Vocabulary safety: a teacher whose vocabulary differs from the data's tokenizer (size or token
strings) is refused unless ``scheme.align=exact`` (see :mod:`kdlab.teachers.aligned`).
``Result.extra`` holds the teacher's, the baseline's and the student's validation/test
perplexity, training tokens/s, peak RSS and generation samples.
"""
from __future__ import annotations

import inspect
import resource
import sys
import time
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from kdlab.core import Batch, DataInfo, Method, Outputs, Teacher
from kdlab.data import DataSpec, DataSplits, Loader
from kdlab.data.text import TextSplits, causal_pairs, load_text_spec, model_inputs
from kdlab.engine.distiller import Distiller
from kdlab.engine.run import Result
from kdlab.errors import ConfigError
from kdlab.evaluate.lm import lm_evaluate, token_metrics
from kdlab.methods import create_method
from kdlab.models import MODELS, create_model, list_models, takes_tokens
from kdlab.models._causal import sample
from kdlab.models.load import load_model
from kdlab.schemes._common import SchemeContext, register_scheme
from kdlab.spec import Spec
from kdlab.teachers.aligned import AlignedTeacher, check_vocab
from kdlab.teachers.frozen import FrozenTeacher
from kdlab.teachers.token_cache import TokenCacheTeacher, build_token_cache

LOSSES = ("fkl", "rkl", "jsd", "skl", "tv")


class LMOptions(Spec):
    """``scheme:`` options of ``kdlab lm-distill``."""

    teacher: str = "gpt"  # a token model name (trained here, stage teacher/), a kdlab checkpoint, or hf:<dir>
    teacher_options: dict[str, Any] = {"layers": 4, "width": 256, "heads": 8}
    teacher_epochs: int | None = Field(None, ge=1)  # epochs of the teacher trained here (default: train.epochs)
    student: str = "gpt"  # a token model name or hf:<dir>
    student_options: dict[str, Any] = {"layers": 2, "width": 128, "heads": 4}
    loss: Literal["fkl", "rkl", "jsd", "skl", "tv"] = "fkl"  # the token-level divergence (a method of that name)
    alpha: float = Field(1.0, ge=0, le=1)  # weight of the divergence; cross-entropy on the labels gets 1 − alpha
    T: float = Field(1.0, gt=0)  # temperature of the divergence
    beta: float = Field(0.5, ge=0, le=1)  # JSD(β) mixing weight (loss=jsd)
    skew: float = Field(0.1, ge=0, lt=1)  # skew KL mixing weight (loss=skl)
    lmbda: float = Field(0.0, ge=0, le=1)  # fraction of on-policy batches (student samples scored by the teacher)
    prompt: int = Field(16, ge=1)  # tokens of a data sequence kept as the prompt of an on-policy sample
    gen_temperature: float = Field(1.0, ge=0)  # sampling temperature of on-policy sequences (0: greedy)
    baseline: bool = True  # also train the student alone (stage baseline/)
    align: Literal["none", "exact"] = "none"  # vocabulary alignment between teacher and student
    offline_topk: int | None = Field(None, ge=1)  # train from the teacher's cached top-k log-probabilities
    cache_dtype: Literal["float16", "float32"] = "float16"  # storage of the cached top-k log-probabilities
    samples: int = Field(2, ge=0)  # generation samples of the student in the report
    sample_tokens: int = Field(80, ge=1)


# ---------------------------------------------------------------- on-policy trainable

class OnPolicy(nn.Module):
    """A Distiller whose batches are, with probability ``lmbda`` each, replaced by sequences the
    student samples from the batch's first ``prompt`` tokens (``forward(batch)`` as any trainable).

    Sampled batches carry ``targets=None`` (the labels term skips them) and a loss mask on the
    sampled tokens only; the teacher scores them through the Distiller as usual.
    """

    def __init__(self, inner: Distiller, lmbda: float, prompt: int, temperature: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        self.inner = inner
        self.lmbda, self.prompt, self.temperature, self.seed = lmbda, prompt, temperature, seed
        self.epoch = 0
        self.sampled_batches = self.batches = 0
        self.gen_tokens, self.gen_seconds = 0, 0.0

    @property
    def student(self) -> nn.Module:
        return self.inner.student

    def prepare(self, batch: Batch, info: DataInfo) -> None:
        self.inner.prepare(batch, info)

    def set_progress(self, epoch: int, epochs: int) -> None:
        self.epoch = epoch
        self.inner.set_progress(epoch, epochs)

    def generator(self, batch: Batch) -> torch.Generator:
        first = int(batch.index[0]) if batch.index is not None and len(batch.index) else 0
        return torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch * 7_919 + first) % (2**63))

    def on_policy_batch(self, batch: Batch, g: torch.Generator) -> Batch:
        """The batch's sequences, cut to their first ``prompt`` tokens and continued by the student."""
        x = batch.inputs
        assert isinstance(x, dict)
        ids = x["input_ids"]
        L = ids.shape[1]
        p = min(self.prompt, L - 1)
        t0 = time.perf_counter()
        seq = sample(self.inner.student, ids[:, :p], L + 1 - p, g, self.temperature)  # [B, L + 1]
        self.gen_seconds += time.perf_counter() - t0
        self.gen_tokens += seq.shape[0] * (L + 1 - p)
        present = torch.ones_like(seq, dtype=torch.bool)
        learn = torch.arange(L + 1, device=seq.device).expand_as(seq) >= p
        inp, attn, targets = causal_pairs(seq, present, learn)
        return Batch(model_inputs(inp, attn, targets), None, batch.index, batch.view)

    def forward(self, batch: Batch) -> tuple[Outputs, dict[str, Tensor]]:
        g = self.generator(batch)
        self.batches += 1
        if float(torch.rand(1, generator=g)) < self.lmbda:
            self.sampled_batches += 1
            batch = self.on_policy_batch(batch, g)
        return self.inner(batch)


# ---------------------------------------------------------------- models and teachers

def token_model(spec: str, vocab: int, seq_len: int, options: dict[str, Any], seed: int) -> nn.Module:
    """A fresh registered token model (seeded), or a local Hugging Face model (``hf:<dir>``)."""
    if spec.startswith("hf:"):  # its architecture is the directory's; only the dtype option applies
        return create_model("hf-causal", vocab, path=spec[3:], **{k: v for k, v in options.items() if k == "dtype"})
    if spec not in list_models():
        raise ConfigError(f"unknown model {spec!r} for a language model (token models: "
                          f"{', '.join(n for n in list_models() if takes_tokens(n))}, or hf:<dir>)")
    if not takes_tokens(spec):
        raise ConfigError(f"model {spec!r} does not take tokens (token models: "
                          f"{', '.join(n for n in list_models() if takes_tokens(n))}, or hf:<dir>)")
    opts = dict(options)
    if "context" in inspect.signature(MODELS.get(spec)).parameters:
        opts.setdefault("context", seq_len)
    torch.manual_seed(seed)
    try:
        return create_model(spec, vocab, **opts)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model {spec!r} cannot be built with {opts}: {e}") from None


def _hf_tokens(path: str) -> list[str] | None:
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except (ImportError, OSError, ValueError):
        return None
    return [str(t) for t in tok.convert_ids_to_tokens(list(range(len(tok))))]


def _loaded_teacher(spec: str, d: DataSplits) -> tuple[nn.Module, list[str] | None]:
    if spec.startswith("hf:"):
        from kdlab.models.hf_causal import load_hf_causal

        return load_hf_causal(spec[3:]), _hf_tokens(spec[3:])
    if not (Path(spec).exists() or Path(spec + ".safetensors").exists()):
        raise ConfigError(f"teacher {spec!r} is neither a token model name, a kdlab checkpoint nor hf:<dir>")
    module, meta = load_model(spec)
    return module, meta.get("classes")


def _vocab_of(module: nn.Module, tokens: list[str] | None) -> int:
    """The teacher's output vocabulary, known before it reads a single (possibly foreign) token id."""
    v = getattr(module, "vocab", None)
    if isinstance(v, int):
        return v
    get_head = getattr(module, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if isinstance(head, nn.Linear):
        return int(head.out_features)
    if tokens is not None:
        return len(tokens)
    raise ConfigError(f"cannot tell the vocabulary size of the teacher {type(module).__name__}")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB, macOS bytes)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1 << 20) if sys.platform == "darwin" else r / 1024


def _loss_method(opts: LMOptions) -> Method:
    hp: dict[str, Any] = {"weight": opts.alpha, "T": opts.T}
    if opts.loss == "jsd":
        hp["beta"] = opts.beta
    if opts.loss == "skl":
        hp["alpha"] = opts.skew
    return create_method(opts.loss, **hp)


def _samples(model: nn.Module, d: DataSplits, n: int, tokens: int, seed: int, prompt: int) -> list[str]:
    tok = getattr(d, "tokenizer", None)
    if n == 0 or tok is None:
        return []
    b = next(iter(Loader(d.test, n)))
    assert isinstance(b.inputs, dict)
    ids = b.inputs["input_ids"][:, :prompt]
    ctx_len = getattr(model, "context", None)
    if ctx_len is not None:
        tokens = min(tokens, int(ctx_len) - ids.shape[1])
    if tokens < 1:
        return []
    seq = sample(model, ids, tokens, torch.Generator().manual_seed(seed), temperature=1.0)
    return [tok.decode(ids[i].tolist()) + " ▸ " + tok.decode(seq[i, ids.shape[1]:].tolist()) for i in range(len(seq))]


# ---------------------------------------------------------------- the scheme

def _data(spec: DataSpec) -> DataSplits:
    return load_text_spec(spec)


@register_scheme("lm-distill", LMOptions, data=_data)
def lm_distill(ctx: SchemeContext, opts: LMOptions) -> Result:
    """Teacher (trained here or loaded), the student alone, and the student distilled token-level.

    ``Result.extra``: ``teacher`` (val/test perplexity, next-token accuracy), ``baseline`` (the
    student alone), ``student`` (validation metrics of the deployed student), ``train_tokens_per_s``,
    ``peak_rss_mb``, ``samples`` and, when used, ``on_policy`` and ``offline`` statistics.
    """
    d = ctx.data
    if not isinstance(d, TextSplits):
        raise ConfigError("kdlab lm-distill trains on a text corpus (data.name=bbc-news or text)")
    V, L = d.num_classes, int(d.train.x.shape[1])
    if opts.lmbda > 0 and opts.offline_topk:
        raise ConfigError("scheme.lmbda > 0 (on-policy) needs a live teacher to score the student's samples; "
                          "it cannot be combined with scheme.offline_topk")
    ev = lm_evaluate
    bs = ctx.schedule.eval_batch_size

    # --- the teacher
    t_module: nn.Module
    t_tokens: list[str] | None
    if opts.teacher in list_models() or opts.teacher in MODELS:
        model = token_model(opts.teacher, V, L, opts.teacher_options, ctx.seed + 1)
        rt = ctx.run(Distiller(model, None, [create_method("ce")]), "teacher", epochs=opts.teacher_epochs,
                     evaluate=ev, report=False)
        t_module, t_tokens = rt.student, list(d.classes)
    else:
        t_module, t_tokens = _loaded_teacher(opts.teacher, d)
    teacher: Teacher = FrozenTeacher(t_module)
    tv = _vocab_of(t_module, t_tokens)
    check_vocab(tv, V, t_tokens, list(d.classes), opts.align)
    aligned: AlignedTeacher | None = None
    if opts.align == "exact" and (tv != V or t_tokens != list(d.classes)):
        if t_tokens is None:
            raise ConfigError("scheme.align=exact needs the teacher's token strings (a kdlab checkpoint records "
                              "them; an hf:<dir> teacher needs its tokenizer files in that directory)")
        aligned = AlignedTeacher(teacher, t_tokens, list(d.classes))
        teacher = aligned
    t_eval = {split: token_metrics(lambda b: teacher(b).logits, getattr(d, split), bs) for split in ("val", "test")}

    # --- offline teacher logits
    offline: dict[str, Any] | None = None
    train_teacher: Teacher = teacher
    if opts.offline_topk:
        k = min(opts.offline_topk, V)
        where = (ctx.opts.run_dir or Path(f"runs/lm-distill-{d.name.replace(':', '-')}")) / f"teacher-top{k}"
        t0 = time.perf_counter()
        if not (where / "manifest.json").is_file():
            build_token_cache(teacher, d.train, where, k, vocab=V, dtype=opts.cache_dtype,
                              info={"data_fingerprint": d.fingerprint()})
        cached = TokenCacheTeacher(where)
        train_teacher = cached
        offline = {"k": k, "dir": str(where), "bytes_per_token": cached.bytes_per_token,
                   "full_logits_bytes_per_token": 4 * V, "build_seconds": round(time.perf_counter() - t0, 2)}

    # --- the student alone (same tokens, same steps)
    base = None
    if opts.baseline:
        rb = ctx.run(Distiller(token_model(opts.student, V, L, opts.student_options, ctx.seed), None,
                               [create_method("ce")]), "baseline", evaluate=ev, report=False)
        base = {"test": rb.test, "val": ev(rb.student, d.val, bs)}

    # --- the distilled student
    methods: list[Method] = [create_method("ce", weight=1 - opts.alpha)] if opts.alpha < 1 else []
    methods.append(_loss_method(opts))
    student = token_model(opts.student, V, L, opts.student_options, ctx.seed)
    inner = Distiller(student, train_teacher, methods)
    trainable: nn.Module = inner
    if opts.lmbda > 0:
        trainable = OnPolicy(inner, opts.lmbda, opts.prompt, opts.gen_temperature, ctx.seed)

    started = time.perf_counter()

    def extra() -> dict[str, Any]:
        seconds = time.perf_counter() - started  # training (and the per-epoch validation) in this process
        s = student
        out: dict[str, Any] = {"teacher": t_eval, "student_val": ev(s, d.val, bs),
                               "vocab": V, "seq_len": L, "train_tokens": d.train.tokens,  # type: ignore[attr-defined]
                               "params": {"student": sum(p.numel() for p in s.parameters()),
                                          "teacher": sum(p.numel() for p in t_module.parameters())},
                               "peak_rss_mb": round(peak_rss_mb(), 1), "loss": opts.loss,
                               "train_tokens_per_s": round(d.train.tokens * ctx.schedule.epochs  # type: ignore[attr-defined]
                                                           / max(seconds, 1e-9), 1)}
        if base is not None:
            out["baseline"] = base
        if aligned is not None:
            out["alignment"] = {"unmatched_teacher_mass": aligned.unmatched_mass,
                                "student_tokens_without_match": aligned.student_unmatched}
        if offline is not None:
            out["offline"] = offline
        if isinstance(trainable, OnPolicy):
            out["on_policy"] = {"lmbda": opts.lmbda, "sampled_batches": trainable.sampled_batches,
                                "batches": trainable.batches, "generated_tokens": trainable.gen_tokens,
                                "generation_tokens_per_s": round(trainable.gen_tokens / max(trainable.gen_seconds,
                                                                                           1e-9), 1)}
        out["samples"] = _samples(s, d, opts.samples, opts.sample_tokens, ctx.seed, opts.prompt)
        return out

    return ctx.run(trainable, evaluate=ev, report=False, extra=extra)  # type: ignore[arg-type]
