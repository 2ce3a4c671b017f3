"""Screening the default recipe in the main job's regime: the shipped resnet56 teacher, a resnet8
student, all 54,000 Fashion-MNIST training images with random crop + flip, a 4-view teacher cache,
one seed. Each candidate is one JSON object (method, alpha, T, mix, epochs, seed, views):

    python benchmarks/recipe.py --epochs 8 '{"method": "alone"}' '{"method": "kd"}' '{"method": "dist"}'

Prints one JSON line per candidate (test top-1 and macro-F1 of the best-on-validation epoch, best
validation top-1, seconds); results are collected by hand into benchmarks/recipe.md.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import kdlab
from kdlab.data import load_data

TEACHER = "kdlab/assets/teachers/fmnist_resnet56"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--student", default="resnet8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="runs/recipe")
    ap.add_argument("candidates", nargs="+")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for spec in a.candidates:
        c = json.loads(spec)
        subset, mix, views, seed = c.get("subset"), c.get("mix", "none"), c.get("views", 4), c.get("seed", 0)
        data = load_data("fashion-mnist", subset=subset, augment=True, mix=mix)
        t0 = time.perf_counter()
        if c["method"] == "alone":
            r = kdlab.train(a.student, data, epochs=a.epochs, seed=seed)
        else:
            r = kdlab.distill(TEACHER, a.student, data, method=c["method"], alpha=c.get("alpha"), T=c.get("T"),
                              epochs=a.epochs, seed=seed,
                              cache={"dir": f"{a.work}/cache-{subset}-{mix}-v{views}-s{seed}", "views": views})
        print(json.dumps({"epochs": a.epochs, "student": a.student, **c, "acc": round(100 * r.test["acc"], 2),
                          "f1": round(100 * r.test["f1"], 2), "val": round(100 * r.best_val_acc, 2),
                          "s": round(time.perf_counter() - t0)}), flush=True)


if __name__ == "__main__":
    main()
