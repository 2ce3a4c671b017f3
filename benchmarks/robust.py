"""Adversarial robustness of the Fashion-MNIST teacher and students: does standard KD make a student
more fragile? Clean, FGSM and PGD top-1 (L∞, ε in [0, 1] pixel units; kdlab.evaluate.attack) of
the shipped resnet56 teacher, the resnet8 student alone, the resnet8 KD student and their int8 QAT
versions (fake-quantised PyTorch models), all from ``benchmarks/quantized.py``'s run directories.

    python benchmarks/quantized.py --seeds 0 1 2 && python benchmarks/robust.py --seeds 0 1 2
    python benchmarks/robust.py --seeds 0 --subset 10000 --epochs 3 --qat-epochs 2 --samples 500  # reduced

No adversarial training here (PGD-AT, TRADES, ARD and RSLAD are not implemented yet).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kdlab.api import attack  # noqa: E402
from kdlab.config import load_config  # noqa: E402
from kdlab.data import load_data_spec  # noqa: E402

TEACHER = Path(__file__).resolve().parent.parent / "kdlab" / "assets" / "teachers" / "fmnist_resnet56"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--student", default="resnet8")
    ap.add_argument("--subset", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--qat-epochs", type=int, default=3)
    ap.add_argument("--qat-lr", type=float, default=0.0005)
    ap.add_argument("--samples", type=int, default=1000, help="first N test images attacked")
    ap.add_argument("--eps", type=float, nargs="+", default=[0.03, 0.1])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--work", default="runs/quantized")
    ap.add_argument("--out", default="benchmarks/robust.md")
    a = ap.parse_args()
    torch.set_num_threads(1)
    tag = f"{a.student}-sub{a.subset}-e{a.epochs}-q{a.qat_epochs}"
    data = load_data_spec(load_config(base={"data": {"name": "fashion-mnist", "subset": a.subset}}).data)
    q = f"qat-e{a.qat_epochs}-lr{a.qat_lr}"
    models = {"teacher resnet56": {s: TEACHER for s in a.seeds}}
    for name, kind, sub in (("student alone", "alone", "fp32"), ("KD student", "kd", "fp32"),
                            ("QAT alone int8", "alone", q), ("QAT + KD int8", "kd", q)):
        models[name] = {s: Path(a.work) / tag / f"s{s}" / kind / sub / "best" for s in a.seeds}
    res: dict[str, dict[str, list[float]]] = {}
    t0 = time.time()
    for name, by_seed in models.items():
        seeds = a.seeds[:1] if name.startswith("teacher") else a.seeds
        for s in seeds:
            for kind, eps in [("fgsm", e) for e in a.eps] + [("pgd", e) for e in a.eps]:
                r = attack(by_seed[s], data, "test", kind=kind, eps=eps, steps=a.steps, samples=a.samples)
                res.setdefault(name, {}).setdefault("clean", []).append(r["clean_acc"])
                res[name].setdefault(f"{kind} {eps}", []).append(r["adv_acc"])
            print(f"{name} seed {s}: {time.time() - t0:.0f}s", flush=True)

    def cell(v: list[float]) -> str:
        return f"{100 * statistics.mean(v):.1f}" + (f" ± {100 * statistics.stdev(v):.1f}" if len(v) > 1 else "")

    cols = ["clean"] + [f"fgsm {e}" for e in a.eps] + [f"pgd {e}" for e in a.eps]
    heads = ["clean"] + [f"FGSM ε={e}" for e in a.eps] + [f"PGD-{a.steps} ε={e}" for e in a.eps]
    lines = ["# Adversarial robustness of the Fashion-MNIST teacher and students", "",
             f"Command: `python benchmarks/robust.py --seeds {' '.join(map(str, a.seeds))}"
             + (f" --subset {a.subset}" if a.subset else "") + f" --epochs {a.epochs} --qat-epochs {a.qat_epochs} "
             f"--samples {a.samples}` (after `benchmarks/quantized.py` with the same settings).", "",
             f"Top-1 % on the first {a.samples} Fashion-MNIST test images, clean and under white-box L∞ attacks "
             f"(kdlab.evaluate.attack; ε in [0, 1] pixel units, PGD step 2.5 ε / {a.steps}, 1 random start; "
             "inputs kept in [0, 1]). Students: benchmarks/quantized.md's runs "
             f"({a.student}, {'first ' + str(a.subset) if a.subset else 'all'} training images, {a.epochs} fp32 "
             f"epochs, {a.qat_epochs} QAT epochs); the teacher is the shipped resnet56. Mean ± sd over seeds "
             f"{a.seeds} where there are several. Machine: {platform.processor() or 'x86-64'}, 2 shared CPU cores. "
             "No model here was trained adversarially.", "",
             "| model | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
    for name, r in res.items():
        lines.append(f"| {name} | " + " | ".join(cell(r[c]) for c in cols) + " |")
    Path(a.out).write_text("\n".join(lines) + "\n")
    Path(a.out).with_suffix(".json").write_text(json.dumps(res, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
