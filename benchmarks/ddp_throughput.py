"""Training throughput of `kdlab distill` in one process against two data-parallel processes
(torchrun, gloo) on this machine's CPU cores.

    .venv/bin/python benchmarks/ddp_throughput.py                   # Fashion-MNIST subset, KD cnn_medium -> cnn_small
    .venv/bin/python benchmarks/ddp_throughput.py --subset 4000 --epochs 2 --repeats 1

Every configuration trains the same student with the same global batch for the same epochs. The
throughput is training samples per second of the median epoch after the first (the first pays for
warm-up); process start-up and evaluation are outside it. Results go to benchmarks/ddp.json and are
printed as a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def _run(cmd: list[str], cwd: Path, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--subset", type=int, default=10000)
    ap.add_argument("--teacher-model", default="cnn_medium")
    ap.add_argument("--student", default="cnn_small")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128, help="global batch (split over the processes)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "ddp.json"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kdlab-ddp-bench-"))
    common = [f"data.subset={args.subset}", "report=false", "--quiet"]
    kd = [sys.executable, "-m", "kdlab"]
    print(f"teacher: {args.teacher_model}, 1 epoch", file=sys.stderr)
    _run([*kd, "train", "--data", args.data, "--model", args.teacher_model, "--epochs", "1", "--out", "teacher",
          "threads=2", *common], work, 2)
    distill = ["distill", "--teacher", "teacher/best", "--student", args.student, "--data", args.data,
               "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), *common]
    configs = {
        "1 process x 1 thread": (lambda out: [*kd, *distill, "--out", out, "threads=1"], 1),
        "1 process x 2 threads": (lambda out: [*kd, *distill, "--out", out, "threads=2"], 2),
        "2 processes x 1 thread (torchrun, gloo)": (
            lambda out: [str(BIN / "torchrun"), "--nproc-per-node", "2", "-m", "kdlab", *distill, "--out", out,
                         "threads=1"], 1),
    }
    results = []
    for rep in range(args.repeats):
        for name, (cmd, threads) in configs.items():
            out = f"run-{len(results)}"
            wall = _run(cmd(out), work, threads)
            rows = [json.loads(l) for l in (work / out / "metrics.jsonl").read_text().splitlines()]
            steps = rows[0]["step"]
            samples = steps * args.batch_size  # drop_last: every epoch is `steps` full global batches
            epoch_s = statistics.median(r["epoch_seconds"] for r in rows[1:] or rows)
            results.append({"config": name, "repeat": rep, "epoch_seconds": epoch_s, "samples_per_s": samples / epoch_s,
                            "wall_seconds": round(wall, 1), "val_acc": rows[-1]["val_acc"],
                            "train_samples_per_epoch": samples})
            print(f"{name}: {samples / epoch_s:,.0f} samples/s (epoch {epoch_s:.2f} s, wall {wall:.1f} s)",
                  file=sys.stderr)
    summary = []
    for name in configs:
        rs = [r for r in results if r["config"] == name]
        summary.append({"config": name, "samples_per_s": statistics.median(r["samples_per_s"] for r in rs),
                        "epoch_seconds": statistics.median(r["epoch_seconds"] for r in rs),
                        "wall_seconds": statistics.median(r["wall_seconds"] for r in rs),
                        "val_acc": rs[-1]["val_acc"]})
    base = summary[0]["samples_per_s"]
    meta = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores",
            "torch": torch.__version__, "load_average_after": os.getloadavg(), "args": vars(args),
            "command": "python benchmarks/ddp_throughput.py " + " ".join(sys.argv[1:])}
    Path(args.out).write_text(json.dumps({"meta": meta, "summary": summary, "runs": results}, indent=2))
    print("\n| configuration | samples/s | vs 1x1 | epoch (s) | wall incl. start-up (s) | final val acc |")
    print("|---|---:|---:|---:|---:|---:|")
    for s in summary:
        print(f"| {s['config']} | {s['samples_per_s']:,.0f} | {s['samples_per_s'] / base:.2f}x "
              f"| {s['epoch_seconds']:.2f} | {s['wall_seconds']:.1f} | {s['val_acc']:.4f} |")
    print(f"\nload average after the runs: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
