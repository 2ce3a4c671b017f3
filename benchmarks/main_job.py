"""The main job over several seeds: the same student trained alone vs distilled from the shipped
Fashion-MNIST teacher, same epochs, optimiser, schedule and seed (hence the same initial weights).

    python benchmarks/main_job.py --seeds 0 1 2 --epochs 15 --student cnn_tiny --out benchmarks/main_job.md
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import kdlab
from kdlab.cli.demo import ASSET
from kdlab.data import load_data
from kdlab.evaluate.cost import count_params
from kdlab.models.load import model_for_data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--student", default="cnn_tiny")
    ap.add_argument("--method", default="kd")
    ap.add_argument("--T", type=float, default=4.0)
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--teacher", default=str(ASSET))
    ap.add_argument("--out", default="benchmarks/main_job.md")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache-dir", default="runs/main_job_cache",
                    help="teacher-output cache (one for every seed: the split follows data.split_seed, fixed at 0)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    teacher, _ = kdlab.load_model(a.teacher)
    rows = []
    data = load_data("fashion-mnist")  # one split for every seed; the seed varies the weights and batch order
    for seed in a.seeds:
        t0 = time.perf_counter()
        alone = kdlab.train(a.student, data, epochs=a.epochs, seed=seed)
        t1 = time.perf_counter()
        kd = kdlab.distill(a.teacher, a.student, data, method=a.method, T=a.T, alpha=a.alpha, epochs=a.epochs,
                           seed=seed, cache=a.cache_dir)
        t2 = time.perf_counter()
        t_acc = kdlab.evaluate(a.teacher, data)["acc"]
        rows.append({"seed": seed, "teacher": t_acc, "alone": alone.test["acc"], "kd": kd.test["acc"],
                     "alone_f1": alone.test["f1"], "kd_f1": kd.test["f1"], "alone_s": t1 - t0, "kd_s": t2 - t1})
        print(json.dumps(rows[-1]), flush=True)
    s_params = count_params(model_for_data(a.student, data))
    t_params = count_params(teacher)

    def ms(key: str) -> str:
        v = [100 * r[key] for r in rows]
        return f"{statistics.mean(v):.2f} ± {statistics.stdev(v) if len(v) > 1 else 0:.2f}"

    gains = [100 * (r["kd"] - r["alone"]) for r in rows]
    lines = [
        "# Main job: Fashion-MNIST, student alone vs distilled",
        "",
        f"Command: `python benchmarks/main_job.py --seeds {' '.join(map(str, a.seeds))} --epochs {a.epochs} "
        f"--student {a.student} --method {a.method} --T {a.T} --alpha {a.alpha} --threads {a.threads} --out {a.out}`",
        "",
        f"Data: Fashion-MNIST (54,000 train / 6,000 val split by seed / 10,000 test), no augmentation. "
        f"Teacher: `{Path(a.teacher).name}` ({t_params:,} params, `make teacher` reproduces it). "
        f"Student: `{a.student}` ({s_params:,} params, {t_params / s_params:.1f}× fewer). "
        f"Both students: {a.epochs} epochs, SGD lr 0.05 momentum 0.9 nesterov, wd 5e-4, cosine, batch 128; "
        f"test metrics of the best-on-validation epoch. Machine: {platform.machine()}, "
        f"{torch.get_num_threads()} threads.",
        "",
        "| model | top-1 % (mean ± std) | macro-F1 % | train time s (median) |",
        "|---|---|---|---|",
        f"| teacher | {ms('teacher')} | | |",
        f"| {a.student} alone | {ms('alone')} | {ms('alone_f1')} | "
        f"{statistics.median(r['alone_s'] for r in rows):.0f} |",
        f"| {a.student} + {a.method} (T={a.T}, α={a.alpha}) | {ms('kd')} | {ms('kd_f1')} | "
        f"{statistics.median(r['kd_s'] for r in rows):.0f} |",
        "",
        f"Gain of distillation per seed (points): {', '.join(f'{g:+.2f}' for g in gains)}; "
        f"mean {statistics.mean(gains):+.2f}.",
        "",
        "Per-seed results:",
        "",
        "| seed | teacher | alone | distilled |",
        "|---|---|---|---|",
        *[f"| {r['seed']} | {100 * r['teacher']:.2f} | {100 * r['alone']:.2f} | {100 * r['kd']:.2f} |" for r in rows],
        "",
        "Train times include per-epoch validation; the distilled run reads the teacher's outputs from a cache "
        "built once per seed's split (the build, a single teacher pass over the training set, is included the first "
        "time). The machine's 2 cores were shared with other jobs, so times are indicative only.",
    ]
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
