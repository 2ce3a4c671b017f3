"""kdlab lm-distill end to end on a tiny text corpus: teacher, baseline and distilled student in the
one run lifecycle (layout, summary, resume), on-policy batches (seeded, deterministic, prompt
masked), offline top-k teacher logits, and the vocabulary refusal as a one-line exit-2 error."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from kdlab.cli.main import _register, app
from kdlab.core import Batch
from kdlab.data import Loader
from kdlab.data.text import load_text
from kdlab.engine.distiller import Distiller
from kdlab.methods import create_method
from kdlab.models import create_model
from kdlab.schemes.lm import OnPolicy
from kdlab.teachers.frozen import FrozenTeacher

_register()
runner = CliRunner()
TINY = ["--seq-len", "24", "--epochs", "1", "--batch-size", "16", "--quiet", "threads=1",
        "scheme.teacher_options={layers: 1, width: 32, heads: 2}",
        "scheme.student_options={layers: 1, width: 16, heads: 2}", "scheme.samples=1", "scheme.sample_tokens=8"]
LAYOUT = {"config.yaml", "metrics.jsonl", "best.safetensors", "last.safetensors", "state.pt", "summary.json"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("lm")
    words = ["the", "market", "rose", "as", "shares", "in", "tech", "firms", "fell", "sharply", "today"]
    g = torch.Generator().manual_seed(0)
    docs = [" ".join(words[int(i)] for i in torch.randint(0, len(words), (40,), generator=g)) + "."
            for _ in range(24)]
    (d / "c.txt").write_text("\n\n".join(docs))
    return d / "c.txt"


def _invoke(*args: str):
    return runner.invoke(app, ["lm-distill", *args])


def test_lm_distill_end_to_end_and_resume(corpus, tmp_path):
    out = tmp_path / "run"
    r = _invoke("--data", "text", "--root", str(corpus), "--loss", "jsd", "--lmbda", "0.5", "--json",
                "--out", str(out), *TINY)
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    e = res["extra"]
    assert {"teacher", "baseline", "student_val", "train_tokens_per_s", "peak_rss_mb", "samples", "on_policy"} <= set(e)
    assert e["on_policy"]["batches"] > 0 and e["on_policy"]["generated_tokens"] >= 0
    assert res["test"]["ppl"] > 1 and e["teacher"]["test"]["ppl"] > 1 and e["baseline"]["test"]["ppl"] > 1
    for d in (out, out / "teacher", out / "baseline"):
        assert LAYOUT <= {f.name for f in d.iterdir()}, d
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test"]["ppl"] == pytest.approx(res["test"]["ppl"])
    # resumed: every stage is finished, so nothing is retrained and the result is the same
    r2 = _invoke("--data", "text", "--root", str(corpus), "--loss", "jsd", "--lmbda", "0.5", "--json",
                 "--out", str(out), "--resume", *TINY)
    assert r2.exit_code == 0, r2.output
    assert json.loads(r2.output)["test"]["ppl"] == pytest.approx(res["test"]["ppl"], rel=1e-6)


def test_offline_topk_and_a_loaded_teacher(corpus, tmp_path):
    first = tmp_path / "a"
    assert _invoke("--data", "text", "--root", str(corpus), "--out", str(first), "--no-baseline", *TINY).exit_code == 0
    r = _invoke("--data", "text", "--root", str(corpus), "--out", str(tmp_path / "b"), "--no-baseline", "--json",
                "--teacher", str(first / "teacher" / "best"), "--offline-topk", "8", *TINY)
    assert r.exit_code == 0, r.output
    off = json.loads(r.output)["extra"]["offline"]
    assert off["k"] == 8 and off["bytes_per_token"] == 8 * 4 + 4 and Path(off["dir"], "manifest.json").is_file()
    # the teacher in bf16 while it teaches: its perplexity stays close to the float32 one
    r16 = _invoke("--data", "text", "--root", str(corpus), "--out", str(tmp_path / "bf16"), "--no-baseline", "--json",
                  "--teacher", str(first / "teacher" / "best"), "scheme.teacher_dtype=bfloat16", *TINY)
    assert r16.exit_code == 0, r16.output
    e16 = json.loads(r16.output)["extra"]
    e32 = json.loads((first / "summary.json").read_text())["extra"]
    assert e16["teacher_dtype"] == "bfloat16"
    assert e16["teacher"]["test"]["ppl"] == pytest.approx(e32["teacher"]["test"]["ppl"], rel=0.02)
    # on-policy needs a live teacher
    r = _invoke("--data", "text", "--root", str(corpus), "--out", str(tmp_path / "c"), "--no-baseline",
                "--teacher", str(first / "teacher" / "best"), "--offline-topk", "8", "--lmbda", "0.5", *TINY)
    assert r.exit_code != 0 and "live teacher" in str(r.exception)


def test_vocabulary_mismatch_is_one_line_exit_2(corpus, tmp_path):
    common = ["--data", "text", "--root", str(corpus), "--no-baseline", *TINY]
    r = _invoke(*common, "--tokenizer", "char", "--out", str(tmp_path / "char"))
    assert r.exit_code == 0, r.output
    teacher = str(tmp_path / "char" / "teacher" / "best")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    p = subprocess.run([sys.executable, "-m", "kdlab", "lm-distill", *common, "--teacher", teacher, "--out",
                        str(tmp_path / "byte")], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in p.stderr
    assert "but the student's 256" in err[0] and "scheme.align=exact" in err[0], err
    # with the exact token-string alignment it trains, and reports the unmatched mass
    r = _invoke(*common, "--teacher", teacher, "--align", "exact", "--out", str(tmp_path / "aligned"), "--json")
    assert r.exit_code == 0, r.output
    al = json.loads(r.output)["extra"]["alignment"]
    assert al["student_tokens_without_match"] > 200 and 0 <= al["unmatched_teacher_mass"] < 1


def _on_policy(seed: int, lmbda: float = 1.0) -> OnPolicy:
    torch.manual_seed(0)
    s = create_model("gpt", 256, layers=1, width=16, heads=2, context=24)
    t = create_model("gpt", 256, layers=1, width=16, heads=2, context=24)
    return OnPolicy(Distiller(s, FrozenTeacher(t), [create_method("ce"), create_method("jsd")]), lmbda, 6, seed=seed)


def test_on_policy_sampling_is_deterministic_under_a_seed(corpus):
    data = load_text("text", str(corpus), seq_len=24, val_fraction=0.2)
    b: Batch = next(iter(Loader(data.train, 4)))
    a1, a2, other = _on_policy(3), _on_policy(3), _on_policy(4)
    s1 = a1.on_policy_batch(b, a1.generator(b))
    s2 = a2.on_policy_batch(b, a2.generator(b))
    s3 = other.on_policy_batch(b, other.generator(b))
    assert torch.equal(s1.inputs["input_ids"], s2.inputs["input_ids"])
    assert not torch.equal(s1.inputs["input_ids"], s3.inputs["input_ids"])
    ids = s1.inputs["input_ids"]
    assert ids.shape == b.inputs["input_ids"].shape and torch.equal(ids[:, :6], b.inputs["input_ids"][:, :6])
    # the prompt (6 tokens: targets at positions 0..4) is not learned; every sampled token is
    lm = s1.inputs["loss_mask"]
    assert not bool(lm[:, :5].any()) and bool(lm[:, 5:].all()) and s1.targets is None
    # a training step on it: the labels term skips it, the divergence does not
    out, terms = a1(b)
    assert set(terms) == {"jsd"} and a1.sampled_batches == 1
    # λ = 0 never samples
    z = _on_policy(3, lmbda=0.0)
    _, terms = z(b)
    assert set(terms) == {"ce", "jsd"} and z.sampled_batches == 0


def test_hugging_face_student_with_tied_embeddings(corpus, tmp_path):
    """A local GPT-2 (input and output embeddings tied) as the student, on-policy batches through its
    own KV cache; its checkpoint saves (tied tensors) and rebuilds to the same logits."""
    transformers = pytest.importorskip("transformers")
    from kdlab.models.load import load_model

    cfg = transformers.GPT2Config(vocab_size=256, n_layer=1, n_embd=16, n_head=2, n_positions=32, bos_token_id=0,
                                  eos_token_id=0)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "g2", safe_serialization=True)
    r = _invoke("--data", "text", "--root", str(corpus), "--student", f"hf:{tmp_path / 'g2'}", "--lmbda", "0.5",
                "--out", str(tmp_path / "run"), "--no-baseline", "--json", *TINY)
    assert r.exit_code == 0, r.output
    res = json.loads(r.output[r.output.index('{\n  "test"'):])  # transformers may print progress first
    assert res["extra"]["on_policy"]["sampled_batches"] > 0 and len(res["extra"]["samples"]) == 1
    m, meta = load_model(tmp_path / "run" / "best")
    assert meta["model"]["name"] == "hf-causal"
    data = load_text("text", str(corpus), seq_len=24, val_fraction=0.1)
    from kdlab.evaluate.lm import lm_evaluate

    assert lm_evaluate(m, data.test)["ppl"] == pytest.approx(res["test"]["ppl"], rel=1e-5)


def test_sequence_level_kd_batches_come_from_the_teacher(corpus):
    data = load_text("text", str(corpus), seq_len=24, val_fraction=0.2)
    b: Batch = next(iter(Loader(data.train, 4)))
    torch.manual_seed(0)
    s = create_model("gpt", 256, layers=1, width=16, heads=2, context=24)
    t = create_model("gpt", 256, layers=1, width=16, heads=2, context=24).eval()
    d = Distiller(s, FrozenTeacher(t), [create_method("ce", weight=0.5), create_method("fkl", weight=0.5)])
    op = OnPolicy(d, 0.0, 6, seed=1, seqkd=1.0, teacher_module=t)
    tb = op.on_policy_batch(b, op.generator(b), t)
    again = op.on_policy_batch(b, op.generator(b), t)
    assert torch.equal(tb.inputs["input_ids"], again.inputs["input_ids"])  # seeded
    # the teacher's tokens are the targets (shifted once), the prompt is not learned
    ids, y = tb.inputs["input_ids"], tb.targets
    assert y is not None and torch.equal(y[:, 5:-1], ids[:, 6:]) and bool((y[:, :5] == -100).all())
    _, terms = op(b)
    assert set(terms) == {"ce", "fkl"} and op.teacher_batches == 1 and op.sampled_batches == 0
    from kdlab.errors import ConfigError

    with pytest.raises(ConfigError, match="at most 1"):
        OnPolicy(d, 0.6, 6, seqkd=0.6, teacher_module=t)
