"""Adversarial robustness: (A) does standard KD make a student more fragile? (B) robust distillation.

(A) Clean, FGSM and PGD top-1 (L∞, ε in [0, 1] pixel units; kdlab.evaluate.attack) of the shipped
resnet56 teacher, the resnet8 student alone, the resnet8 KD student and their int8 QAT versions
(fake-quantised PyTorch models), all from ``benchmarks/quantized.py``'s run directories.

(B) With ``--robust-data``: a teacher trained with PGD adversarial training (``kdlab train
--adversarial pgd``), then students: alone, standard KD (from a standard teacher), PGD-AT alone,
ARD-style (KD from the robust teacher on PGD examples maximising CE) and RSLAD-style (KL to the
robust teacher's soft labels on examples maximising that KL); see kdlab/engine/adversarial.py for
how these differ from the papers' losses.

    python benchmarks/quantized.py --seeds 0 1 2 && python benchmarks/robust.py --seeds 0 1 2 \
        --robust-data fashion-mnist                                   # the full job
    python benchmarks/robust.py --seeds 0 --subset 10000 --epochs 3 --qat-epochs 2 --samples 500 \
        --robust-data digits --robust-epochs 15                      # the reduced run in robust.md
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
    ap.add_argument("--robust-data", default=None, help="also part B on this dataset (fashion-mnist, digits)")
    ap.add_argument("--robust-teacher", default=None, help="teacher model (default resnet20; digits: cnn_small)")
    ap.add_argument("--robust-student", default=None, help="student model (default resnet8; digits: cnn_tiny)")
    ap.add_argument("--robust-epochs", type=int, default=15)
    ap.add_argument("--adv-steps", type=int, default=10, help="PGD steps per training batch")
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
    n_attacked = 0
    for name, by_seed in models.items():
        seeds = a.seeds[:1] if name.startswith("teacher") else a.seeds
        for s in seeds:
            res.setdefault(name, {}).setdefault("clean", [])
            for i, (kind, eps) in enumerate([("fgsm", e) for e in a.eps] + [("pgd", e) for e in a.eps]):
                r = cached_attack(Path(a.work), by_seed[s], data, kind=kind, eps=eps, steps=a.steps, samples=a.samples)
                n_attacked = r["samples"]
                if i == 0:
                    res[name]["clean"].append(r["clean_acc"])
                res[name].setdefault(f"{kind} {eps}", []).append(r["adv_acc"])
            print(f"{name} seed {s}: {time.time() - t0:.0f}s", flush=True)

    def cell(v: list[float]) -> str:
        return f"{100 * statistics.mean(v):.1f}" + (f" ± {100 * statistics.stdev(v):.1f}" if len(v) > 1 else "")

    cols = ["clean"] + [f"fgsm {e}" for e in a.eps] + [f"pgd {e}" for e in a.eps]
    heads = ["clean"] + [f"FGSM ε={e}" for e in a.eps] + [f"PGD-{a.steps} ε={e}" for e in a.eps]
    lines = ["# Adversarial robustness of teachers and students", "", "## A. Standard training on Fashion-MNIST", "",
             f"Command: `python benchmarks/robust.py {' '.join(sys.argv[1:])}` (after `benchmarks/quantized.py` "
             "with the same --seeds/--subset/--epochs/--qat-epochs/--work).", "",
             f"Top-1 % on the first {n_attacked} Fashion-MNIST test images, clean and under white-box L∞ attacks "
             f"(kdlab.evaluate.attack; ε in [0, 1] pixel units, PGD step 2.5 ε / {a.steps}, 1 random start; "
             "inputs kept in [0, 1]). Students: benchmarks/quantized.md's runs "
             f"({a.student}, {'first ' + str(a.subset) if a.subset else 'all'} training images, {a.epochs} fp32 "
             f"epochs, {a.qat_epochs} QAT epochs); the teacher is the shipped resnet56. Mean ± sd over seeds "
             f"{a.seeds} where there are several. Machine: {platform.processor() or 'x86-64'}, 2 shared CPU cores. "
             "No model here was trained adversarially.", "",
             "| model | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
    for name, r in res.items():
        lines.append(f"| {name} | " + " | ".join(cell(r[c]) for c in cols) + " |")
    if a.robust_data:
        lines += part_b(a)
    Path(a.out).write_text("\n".join(lines) + "\n")
    Path(a.out).with_suffix(".json").write_text(json.dumps(res, indent=1))
    print("\n".join(lines))


def cached_attack(work: Path, path: Path | str, data, **kw) -> dict:
    """:func:`kdlab.api.attack` on the test split, its result kept beside the runs (keyed by the
    checkpoint's checksum and the attack) so that a rerun of this script only re-formats."""
    import hashlib

    ck = Path(str(path) + ".safetensors")
    key = hashlib.sha256(ck.read_bytes() + json.dumps(kw, sort_keys=True).encode()).hexdigest()[:16]
    f = work / "attack-cache" / f"{key}.json"
    if f.is_file():
        return json.loads(f.read_text())
    r = attack(path, data, "test", **kw)
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(r))
    return r


def part_b(a: argparse.Namespace) -> list[str]:
    """Robust teacher, then five students per seed; clean and PGD-20 top-1 at ε = 0.1."""
    from kdlab.api import run

    small = a.robust_data == "digits"
    tm = a.robust_teacher or ("cnn_small" if small else "resnet20")
    sm = a.robust_student or ("cnn_tiny" if small else "resnet8")
    data_cfg = {"name": a.robust_data, **({"subset": a.subset} if a.subset and not small else {})}
    data = load_data_spec(load_config(base={"data": data_cfg}).data)
    adv = {"attack": "pgd", "eps": 0.1, "steps": a.adv_steps}
    kd = [{"name": "ce", "weight": 0.1}, {"name": "kd", "weight": 0.9, "T": 4.0}]
    rslad = [{"name": "kd", "weight": 1.0, "T": 1.0}]
    work = Path(a.work) / f"robust-{a.robust_data}-{tm}-{sm}-e{a.robust_epochs}-k{a.adv_steps}"
    res: dict[str, dict[str, list[float]]] = {}
    t0 = time.time()
    n = 0

    def train(name: str, seed: int, model: str, methods: list, teacher: str | None = None,
              adversarial: dict | None = None) -> Path:
        out = work / f"s{seed}" / name
        if not (out / "best.safetensors").is_file():
            base = {"data": data_cfg, "student": {"name": model}, "methods": methods, "seed": seed, "out": str(out),
                    "train": {"epochs": a.robust_epochs, "batch_size": 128, "lr": 0.05}, "report": False,
                    **({"teacher": {"checkpoint": teacher}} if teacher else {}),
                    **({"adversarial": adversarial} if adversarial else {})}
            run(load_config(base=base), command="distill" if teacher else "train", data=data, progress=False)
            print(f"{name} seed {seed}: {time.time() - t0:.0f}s", flush=True)
        return out / "best"

    for seed in a.seeds:
        std_t = str(train("teacher", seed, tm, [{"name": "ce"}]))
        rob_t = str(train("teacher-pgd-at", seed, tm, [{"name": "ce"}], adversarial=adv))
        runs = {f"teacher {tm}": std_t, f"teacher {tm}, PGD-AT": rob_t,
                f"{sm} alone": train("alone", seed, sm, [{"name": "ce"}]),
                f"{sm} KD (standard teacher)": train("kd", seed, sm, kd, std_t),
                f"{sm} PGD-AT": train("pgd-at", seed, sm, [{"name": "ce"}], adversarial=adv),
                f"{sm} ARD-style (robust teacher)": train("ard", seed, sm, kd, rob_t, adversarial=adv),
                f"{sm} RSLAD-style (robust teacher)": train("rslad", seed, sm, rslad, rob_t,
                                                            adversarial={**adv, "target": "teacher"})}
        for name, path in runs.items():
            r = cached_attack(Path(a.work), path, data, kind="pgd", eps=0.1, steps=20, samples=a.samples)
            n = r["samples"]
            res.setdefault(name, {}).setdefault("clean", []).append(r["clean_acc"])
            res[name].setdefault("pgd", []).append(r["adv_acc"])

    def cell(v: list[float]) -> str:
        return f"{100 * statistics.mean(v):.1f}" + (f" ± {100 * statistics.stdev(v):.1f}" if len(v) > 1 else "")

    out = ["", f"## B. Robust distillation on {a.robust_data}" + (" (reduced)" if small or a.subset else ""), "",
           f"Teacher {tm}, student {sm}, {a.robust_epochs} epochs each (SGD lr 0.05, cosine, batch 128); "
           f"adversarial training with PGD-{a.adv_steps} at ε = 0.1 (step 2.5 ε / {a.adv_steps}); "
           f"KD: 0.9·T²·KL + 0.1·CE at T = 4; RSLAD-style: KL at T = 1 to the robust teacher. "
           f"Evaluated on the first {n} test images, PGD-20 at ε = 0.1, 1 restart; seeds {a.seeds}.", "",
           "| model | clean top-1 % | PGD-20 ε=0.1 top-1 % |", "|---|---|---|"]
    out += [f"| {name} | {cell(r['clean'])} | {cell(r['pgd'])} |" for name, r in res.items()]
    return out + ["", f"One image is {100 / max(n, 1):.2f} points here; with one seed there is no spread to "
                  "compare against, so differences of a few points between students are noise."]


if __name__ == "__main__":
    main()
