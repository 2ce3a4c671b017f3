"""Training speed against hand-written PyTorch: one interleaved run, each arm in its own process.

    python benchmarks/speed.py --rounds 5 --threads 1          # writes benchmarks/speed.json and speed.md

Arms (Fashion-MNIST subset, teacher resnet56 -> student resnet20, batch 128, SGD; the teacher's
weights do not change the cost, so it is used as initialised):

- ``hand_alone`` / ``hand_kd``: a plain PyTorch loop over pre-normalised tensors (CE; CE + Hinton
  KD with the teacher under ``torch.no_grad``), what a user would write by hand;
- ``kdlab_alone``: ``kdlab train``'s loop (``fit`` on a Distiller with CE);
- ``kdlab_eager`` / ``kdlab_onnx``: ``kdlab distill`` with a live teacher, eager PyTorch or
  ONNX Runtime (``teacher.accelerate``);
- ``kdlab_cached``: ``kdlab distill`` reading the teacher's outputs from a cache built beforehand.

Every arm trains two epochs and reports the second (warm) one; a round runs every arm once, in
forward order on even rounds and reverse order on odd ones, and the table gives medians over the
rounds and the ratios that matter (kdlab over the hand loop, cached over training alone).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
ARMS = ["hand_alone", "hand_kd", "kdlab_alone", "kdlab_eager", "kdlab_onnx", "kdlab_cached"]


def _data(subset: int) -> Any:
    from kdlab.data import load_data

    return load_data("fashion-mnist", subset=subset, augment=False)


def _hand(args: argparse.Namespace, kd: bool) -> float:
    import torch
    import torch.nn.functional as F

    from kdlab.models import create_model

    d = _data(args.subset)
    x_all = d.train.gather(torch.arange(len(d.train)))  # normalised once, as a hand-written script would
    y_all = d.train.y
    assert y_all is not None
    torch.manual_seed(0)
    teacher = create_model(args.teacher, 10, 1, 28).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    torch.manual_seed(1)
    student = create_model(args.student, 10, 1, 28)
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    seconds = 0.0
    for epoch in range(2):
        g = torch.Generator().manual_seed(epoch)
        perm = torch.randperm(len(x_all), generator=g)
        student.train()
        t0 = time.perf_counter()
        for i in range(0, len(perm) - args.batch + 1, args.batch):
            idx = perm[i:i + args.batch]
            x, y = x_all[idx], y_all[idx]
            if kd:
                with torch.no_grad():
                    t = teacher(x).logits
            s = student(x).logits
            loss = F.cross_entropy(s, y)
            if kd:
                kl = F.kl_div(F.log_softmax(s / 4.0, 1), F.softmax(t / 4.0, 1), reduction="batchmean") * 16.0
                loss = 0.1 * loss + 0.9 * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - t0
    return seconds


def _kdlab(args: argparse.Namespace, arm: str, work: Path) -> float:
    from kdlab.config import load_config
    from kdlab.schemes.offline import run_config

    base: dict[str, Any] = {"data": {"name": "fashion-mnist", "subset": args.subset, "augment": False},
                            "student": {"name": args.student}, "report": False, "seed": 1,
                            "train": {"epochs": 2, "batch_size": args.batch}}
    if arm == "kdlab_alone":
        base["methods"] = [{"name": "ce"}]
    else:
        base["methods"] = [{"name": "ce", "weight": 0.1}, {"name": "kd"}]
        base["teacher"] = {"checkpoint": str(work / "teacher" / "best"),
                           "accelerate": {"kdlab_eager": "eager", "kdlab_onnx": "onnx"}.get(arm, "auto")}
        if arm == "kdlab_cached":
            base["cache"] = str(work / "cache")
    r = run_config(load_config(base=base), command="distill", save=False, progress=False)
    return float(r.history[1]["epoch_seconds"])


def _prepare(args: argparse.Namespace, work: Path) -> None:
    """A teacher checkpoint (initial weights) and its output cache, made once before the rounds."""
    import torch

    from kdlab.config import load_config
    from kdlab.engine.run import model_meta
    from kdlab.models import create_model
    from kdlab.store.checkpoint import save_weights
    from kdlab.teachers.cache_build import ensure_cache
    from kdlab.teachers.resolve import resolve_teacher

    d = _data(args.subset)
    torch.manual_seed(0)
    teacher = create_model(args.teacher, 10, 1, 28)
    (work / "teacher").mkdir(parents=True, exist_ok=True)
    save_weights(work / "teacher" / "best", teacher, {**model_meta(teacher, d), "command": "train"})
    cfg = load_config(base={"data": {"name": "fashion-mnist", "subset": args.subset, "augment": False},
                            "teacher": {"checkpoint": str(work / "teacher" / "best")}})
    assert cfg.teacher is not None
    ensure_cache(work / "cache", resolve_teacher(cfg.teacher, d), d, log=None).close()


def _arm(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    s = _hand(args, args.arm == "hand_kd") if args.arm.startswith("hand") else _kdlab(args, args.arm, work)
    print(json.dumps({"arm": args.arm, "seconds": s}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--teacher", default="resnet56")
    ap.add_argument("--student", default="resnet20")
    ap.add_argument("--subset", type=int, default=2816, help="training images (the val split is carved from them)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default="runs/bench-speed")
    ap.add_argument("--out", default=str(ROOT / "speed.json"))
    ap.add_argument("--arms", nargs="+", choices=ARMS, default=ARMS, help="a subset of the arms (default: all)")
    ap.add_argument("--env", nargs="*", default=[], metavar="KEY=VALUE",
                    help="environment of every arm's process, e.g. MALLOC_ARENA_MAX=1 (default: none)")
    ap.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.arm:
        return _arm(args)
    sys.path.insert(0, str(ROOT.parent))
    work = Path(args.work)
    _prepare(args, work)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT.parent),
           **dict(e.split("=", 1) for e in args.env)}
    arms = list(args.arms)
    times: dict[str, list[float]] = {a: [] for a in arms}
    for r in range(args.rounds):
        for arm in (arms if r % 2 == 0 else list(reversed(arms))):
            cmd = [sys.executable, __file__, "--arm", arm, "--teacher", args.teacher, "--student", args.student,
                   "--subset", str(args.subset), "--batch", str(args.batch), "--threads", str(args.threads),
                   "--work", str(work)]
            p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if p.returncode != 0:
                raise SystemExit(f"{arm} failed:\n{p.stderr[-3000:]}")
            times[arm].append(json.loads(p.stdout.strip().splitlines()[-1])["seconds"])
        print(f"round {r}: " + ", ".join(f"{a} {times[a][-1]:.2f}s" for a in arms), flush=True)
    med = {a: statistics.median(v) for a, v in times.items()}
    pairs = {k: (a, b) for k, (a, b) in {"kdlab_eager / hand_kd": ("kdlab_eager", "hand_kd"),
                                          "kdlab_onnx / hand_kd": ("kdlab_onnx", "hand_kd"),
                                          "kdlab_cached / kdlab_alone": ("kdlab_cached", "kdlab_alone"),
                                          "kdlab_alone / hand_alone": ("kdlab_alone", "hand_alone"),
                                          "kdlab_cached / hand_alone": ("kdlab_cached", "hand_alone")}.items()
             if a in times and b in times}
    ratios = {k: med[a] / med[b] for k, (a, b) in pairs.items()}
    # ratios within each round too: load that drifts between rounds cancels in them
    per_round = {k: statistics.median(times[a][i] / times[b][i] for i in range(args.rounds))
                 for k, (a, b) in pairs.items()}
    res = {"setup": vars(args) | {"cpu_count": os.cpu_count()}, "seconds": times, "median": med, "ratios": ratios,
           "ratios_per_round_median": per_round}
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    lines = ["# Training speed against hand-written PyTorch\n",
             f"`python benchmarks/speed.py --rounds {args.rounds} --threads {args.threads}"
             + (f" --arms {' '.join(arms)}" if arms != ARMS else "")
             + (f" --env {' '.join(args.env)}" if args.env else "") + "`: Fashion-MNIST, "
             f"{args.subset} images, {args.teacher} -> {args.student}, batch {args.batch}, {args.threads} thread(s), "
             "second epoch of two, each arm its own process, arms interleaved (forward/reverse order by round).\n",
             "| arm | median epoch (s) | all rounds (s) |", "|---|---|---|"]
    lines += [f"| {a} | {med[a]:.2f} | {', '.join(f'{v:.2f}' for v in times[a])} |" for a in arms]
    lines += ["", "| ratio | of medians | median of per-round ratios |", "|---|---|---|"]
    lines += [f"| {k} | {v:.3f} | {per_round[k]:.3f} |" for k, v in ratios.items()]
    (Path(args.out).with_suffix(".md")).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
