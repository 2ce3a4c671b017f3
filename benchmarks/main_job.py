"""The main job (``kdlab demo``) over several seeds: the same student trained alone vs distilled from the
shipped strong teacher, same data, epochs, optimiser, schedule and seed (hence the same initial weights).

    python benchmarks/main_job.py --seeds 0 1 2                      # the demo's settings
    python benchmarks/main_job.py --seeds 0 1 2 --epochs 24 --out benchmarks/main_job_3x.md

With the demo's settings it also writes ``kdlab/assets/main_job.json``, which ``kdlab demo`` reads
to set its own gain against the seed spread. Every seed's runs are kept under ``--work``; a seed
whose two runs finished is read back instead of retrained (rerun after an interruption).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kdlab.cli.demo import BENCHMARK, TEACHER, Job, run_job  # noqa: E402
from kdlab.evaluate.compare import to_markdown  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=Job.epochs)
    ap.add_argument("--student", default=Job.student)
    ap.add_argument("--method", default=Job.method)
    ap.add_argument("--subset", type=int, default=Job.subset)
    ap.add_argument("--views", type=int, default=Job.views)
    ap.add_argument("--mix", default=Job.mix, choices=["none", "mixup", "cutmix"])
    ap.add_argument("--teacher", default=str(TEACHER))
    ap.add_argument("--out", default="benchmarks/main_job.md")
    ap.add_argument("--work", default="runs/main_job", help="run directories, one per seed and settings")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    job = replace(Job(), epochs=a.epochs, student=a.student, method=a.method, subset=a.subset, views=a.views,
                  mix=a.mix)
    tag = "-".join(f"{v}" for v in job.key().values())
    rows, tables = [], []
    for seed in a.seeds:
        work = Path(a.work) / tag / f"s{seed}"
        done = work / "result.json"
        if done.is_file():
            rec = json.loads(done.read_text())
        else:
            r = run_job(job, a.teacher, seed, str(work), progress=False)
            rec = {"seed": seed, "alone": r["alone"].test, "distilled": r["distilled"].test,
                   "alone_s": r["alone"].seconds, "distilled_s": r["distilled"].seconds,
                   "table": to_markdown(r["rows"]), "teacher": r["rows"][0].acc,
                   "params": {row.name: row.params for row in r["rows"]}}
            done.write_text(json.dumps(rec, indent=1))
        rows.append(rec)
        tables.append(rec["table"])
        print(json.dumps({k: v for k, v in rec.items() if k != "table"}), flush=True)

    def ms(key: str, metric: str = "acc") -> str:
        v = [100 * r[key][metric] for r in rows]
        return f"{statistics.mean(v):.2f} ± {statistics.stdev(v) if len(v) > 1 else 0:.2f}"

    gains = [100 * (r["distilled"]["acc"] - r["alone"]["acc"]) for r in rows]
    f1_gains = [100 * (r["distilled"]["f1"] - r["alone"]["f1"]) for r in rows]
    spread = max(statistics.stdev([100 * r[k]["acc"] for r in rows]) for k in ("alone", "distilled")) \
        if len(rows) > 1 else float("nan")
    params = rows[0]["params"]
    t_params, s_params = params["teacher"], params["student alone"]
    cmd = (f"python benchmarks/main_job.py --seeds {' '.join(map(str, a.seeds))} --epochs {a.epochs} "
           f"--student {a.student} --method {a.method} --views {a.views} --mix {a.mix}"
           + (f" --subset {a.subset}" if a.subset else "") + f" --threads {a.threads} --out {a.out}")
    verdict = "larger than" if min(gains) > 0 and statistics.mean(gains) > spread else "NOT larger than"
    lines = [
        "# Main job: Fashion-MNIST, the same student alone vs distilled from the shipped teacher", "",
        f"Command: `{cmd}`", "",
        f"Data: Fashion-MNIST, {'the first ' + str(a.subset) + ' of ' if a.subset else ''}54,000 training images "
        "(6,000 held out for validation, `data.split_seed` 0, the teacher's split), the official 10,000 test images"
        + (", random crop (pad 2) + horizontal flip" if job.augment else "") + f". Teacher: `{Path(a.teacher).name}` "
        f"({t_params:,} params, `make teachers`). Student: `{a.student}` ({s_params:,} params, "
        f"{t_params / s_params:.1f}× fewer). Both students: {a.epochs} epochs, SGD lr 0.05 momentum 0.9 nesterov, "
        f"wd 5e-4, cosine, batch 128, precision {job.precision}; test metrics of the best-on-validation epoch. "
        f"Distilled: `{a.method}` at its paper weights, the teacher's outputs cached for {job.views} views per image "
        f"(epoch e reads view e mod {job.views}; the student trains on exactly the view the teacher answered)"
        + (f", the distilled student's inputs mixed by {a.mix} (the student alone trains unmixed)" if a.mix != "none"
           else "") + ". "
        f"Machine: {platform.machine()}, {a.threads} threads.", "",
        "| model | top-1 % (mean ± std) | macro-F1 % (mean ± std) | train time s (median) |",
        "|---|---|---|---|",
        f"| teacher | {statistics.mean(100 * r['teacher'] for r in rows):.2f} | | |",
        f"| {a.student} alone | {ms('alone')} | {ms('alone', 'f1')} | "
        f"{statistics.median(r['alone_s'] for r in rows):.0f} |",
        f"| {a.student} + {a.method} | {ms('distilled')} | {ms('distilled', 'f1')} | "
        f"{statistics.median(r['distilled_s'] for r in rows):.0f} |", "",
        f"Gain of distillation per seed, top-1 (points): {', '.join(f'{g:+.2f}' for g in gains)}; mean "
        f"{statistics.mean(gains):+.2f}. Macro-F1: {', '.join(f'{g:+.2f}' for g in f1_gains)}; mean "
        f"{statistics.mean(f1_gains):+.2f}. Seed spread (the larger top-1 std of the two rows): {spread:.2f}; "
        f"the gain is {verdict} the seed spread.", "",
        "Per-seed results (top-1 %):", "",
        "| seed | alone | distilled | gain |", "|---|---|---|---|",
        *[f"| {r['seed']} | {100 * r['alone']['acc']:.2f} | {100 * r['distilled']['acc']:.2f} | {g:+.2f} |"
          for r, g in zip(rows, gains)], "",
        f"The comparison table of seed {rows[0]['seed']} (what `kdlab demo` prints):", "", tables[0],
        "Train times include per-epoch validation; the distilled run's time excludes building the teacher cache "
        "(one ONNX Runtime teacher pass per view, about 33 s per view on 2 threads here).",
    ]
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if job == Job() and Path(a.teacher).name == TEACHER.name and len(rows) > 1:
        BENCHMARK.write_text(json.dumps({
            "command": cmd, "teacher": Path(a.teacher).name, "job": job.key(), "seeds": a.seeds,
            "alone": [r["alone"]["acc"] for r in rows], "distilled": [r["distilled"]["acc"] for r in rows],
            "alone_f1": [r["alone"]["f1"] for r in rows], "distilled_f1": [r["distilled"]["f1"] for r in rows]},
            indent=1) + "\n")
        print(f"wrote {BENCHMARK}")


if __name__ == "__main__":
    main()
