"""Teacher-output cache: speed, memory and accuracy. Results and the exact command: cache_speed.md.

Parts (``--parts abcdefg``; every timing is a median over paired runs in this one process, wall-clock
and CPU time (``time.process_time``, steadier when other work shares the cores)):

a  epoch time of KD from the cache vs the same student's plain training epoch (target <= 1.10x)
b  live-teacher overhead (live KD epoch - plain epoch) vs the teacher's own forward time (target <= 1.10x)
c  kdlab's loop (fit) vs a minimal hand-written PyTorch loop, same model/data/optimiser (target <= 5% slower);
   part a times it too, part c repeats it alone, and on a tiny MLP to expose any fixed per-step cost
d  cache build throughput vs eager teacher inference; ONNX Runtime / BatchNorm folding / channels_last
   checked against eager outputs
e  peak resident memory distilling from a synthetic cache twice the size of the memory budget
   (separate processes: cache reader with and without dropping its mapped pages)
f  student accuracy from top-k (k = 1, 5, 10) caches vs full logits (Fashion-MNIST subset)
g  sweep of 3 methods x 3 seeds: one shared cache vs the live teacher (wall time, accuracies)

Results are merged into ``--out`` (JSON), part by part, so parts can be run separately.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from paired import clock, run_interleaved  # benchmarks/paired.py (the script's own folder is on sys.path)
from torch import nn

from kdlab.data import DataSplits, Loader, Split, load_data
from kdlab.engine.distiller import Distiller
from kdlab.engine.loop import Schedule, fit
from kdlab.methods import create_method
from kdlab.models import create_model
from kdlab.teachers import FrozenTeacher
from kdlab.teachers.cache_build import build_cache
from kdlab.teachers.cached import CachedTeacher, cache_loader

med = statistics.median


def rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def calibrate_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random but non-trivial BatchNorm statistics (so folding them is a real test)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
    return model.eval()


def kd_methods() -> list:
    return [create_method("ce", weight=0.1), create_method("kd", weight=0.9, T=4.0)]


class Timed:
    """Wraps a loader; records (wall, CPU) seconds of every complete pass, i.e. of the epoch loop
    inside ``fit`` (from the first batch fetched to the last step), excluding set-up and evaluation."""

    def __init__(self, loader: Loader) -> None:
        self.loader, self.spans = loader, []

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        w, c = time.perf_counter(), time.process_time()
        for b in self.loader:
            yield b
        self.spans.append((time.perf_counter() - w, time.process_time() - c))


def one_epoch(student: nn.Module, teacher, methods, data: DataSplits, bs: int, loader: Loader | None = None
              ) -> tuple[float, float]:
    """(wall, CPU) seconds of one training epoch of kdlab's ``fit`` (the loader fit would build by
    default unless ``loader`` is given)."""
    timed = Timed(loader or Loader(data.train, bs, shuffle=True, seed=0, augment=data.augment,
                                   drop_last=len(data.train) > bs))
    fit(Distiller(student, teacher, methods), data, Schedule(epochs=1, batch_size=bs), seed=0, loader=timed,
        progress=False)
    return timed.spans[-1]


def hand_loop(model: nn.Module, X: torch.Tensor, Y: torch.Tensor, bs: int, teacher_logits: torch.Tensor | None = None,
              T: float = 4.0) -> tuple[float, float]:
    """The minimal loop: a seeded permutation, gather a pre-normalised tensor, forward, loss, step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    model.train()
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))

    def loop() -> None:
        for s in range(0, len(X) - bs + 1, bs):
            idx = perm[s:s + bs]
            logits = model(X[idx]).logits
            loss = F.cross_entropy(logits, Y[idx])
            if teacher_logits is not None:
                kl = F.kl_div(F.log_softmax(logits / T, 1), F.log_softmax(teacher_logits[idx] / T, 1),
                              reduction="batchmean", log_target=True)
                loss = 0.1 * loss + 0.9 * T * T * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return clock(loop)


def fmnist(subset: int, augment: bool = False, seed: int = 0) -> DataSplits:
    return load_data("fashion-mnist", split_seed=seed, subset=subset, augment=augment)


# ---------------------------------------------------------------- a, b, c

def part_abc(args, work: Path) -> dict[str, Any]:
    data = fmnist(args.abc_subset)
    bs = 128
    torch.manual_seed(0)
    teacher = FrozenTeacher(calibrate_bn(create_model(args.teacher, 10, 1, 28)))
    student0 = create_model(args.student, 10, 1, 28)
    ct = CachedTeacher(build_cache(teacher, data, work / "abc_cache", log=None))
    X = data.train.gather(torch.arange(len(data.train)))
    Y = data.train.y
    TL = torch.from_numpy(np.array(ct.store.arrays["logits"]))
    fresh = lambda: copy.deepcopy(student0)
    loader = Loader(data.train, bs, shuffle=True, seed=0, drop_last=True)
    batches = list(loader)

    def teacher_fwd() -> tuple[float, float]:
        return clock(lambda: [teacher(b) for b in batches])

    def cache_read() -> tuple[float, float]:
        return clock(lambda: [ct(b) for b in batches])

    runs: dict[str, Callable[[], tuple[float, float]]] = {
        "plain": lambda: one_epoch(fresh(), None, [create_method("ce")], data, bs),
        "cache": lambda: one_epoch(fresh(), ct, kd_methods(), data, bs, cache_loader(data, ct, bs, seed=0)),
        "live": lambda: one_epoch(fresh(), teacher, kd_methods(), data, bs),
        "teacher_fwd": teacher_fwd,
        "cache_read": cache_read,
        "hand_ce": lambda: hand_loop(fresh(), X, Y, bs),
        "hand_kd_cache": lambda: hand_loop(fresh(), X, Y, bs, TL),
    }
    for f in runs.values():  # warm-up
        f()
    times = run_interleaved(runs, args.repeats, "abc")
    out: dict[str, Any] = {"setup": {"teacher": args.teacher, "student": args.student, "train_samples": len(data.train),
                                     "batch": bs, "steps": len(batches), "repeats": args.repeats}}
    for clk, t in times.items():
        n = len(t["plain"])
        ratio = lambda a, b: round(med([t[a][i] / t[b][i] for i in range(n)]), 3)
        out[clk] = {
            "median_seconds": {k: round(med(v), 3) for k, v in t.items()},
            "cache_over_plain": ratio("cache", "plain"),
            "live_over_plain": ratio("live", "plain"),
            "live_overhead_over_teacher_fwd": round(med([(t["live"][i] - t["plain"][i]) / t["teacher_fwd"][i]
                                                         for i in range(n)]), 3),
            "cache_read_ms_per_batch": round(1000 * med(t["cache_read"]) / len(batches), 3),
            "kdlab_over_hand_ce": ratio("plain", "hand_ce"),
            "kdlab_over_hand_kd_cache": ratio("cache", "hand_kd_cache"),
            "raw": {k: [round(x, 3) for x in v] for k, v in t.items()},
        }
    return out


def part_c(args, work: Path) -> dict[str, Any]:
    """kdlab's fit vs the minimal loop, more repeats than part a: CE and KD-from-cache on the
    student of part a, and on a tiny MLP (where any fixed per-step cost of the loop shows)."""
    data = fmnist(args.abc_subset)
    bs = 128
    torch.manual_seed(0)
    teacher = FrozenTeacher(calibrate_bn(create_model(args.teacher, 10, 1, 28)))
    ct = CachedTeacher(build_cache(teacher, data, work / "abc_cache", log=None))
    X = data.train.gather(torch.arange(len(data.train)))
    Y = data.train.y
    TL = torch.from_numpy(np.array(ct.store.arrays["logits"]))
    out: dict[str, Any] = {}
    for name, reps in ((args.student, args.repeats_c), ("mlp_tiny", 4 * args.repeats_c)):
        torch.manual_seed(0)
        s0 = create_model(name, 10, 1, 28)
        fresh = lambda: copy.deepcopy(s0)
        runs = {
            "kdlab_ce": lambda: one_epoch(fresh(), None, [create_method("ce")], data, bs),
            "hand_ce": lambda: hand_loop(fresh(), X, Y, bs),
            "kdlab_kd_cache": lambda: one_epoch(fresh(), ct, kd_methods(), data, bs,
                                                cache_loader(data, ct, bs, seed=0)),
            "hand_kd_cache": lambda: hand_loop(fresh(), X, Y, bs, TL),
        }
        for f in runs.values():
            f()
        t = {clk: {k: [] for k in runs} for clk in ("wall", "cpu")}
        for rep in range(reps):
            for k in (list(runs) if rep % 2 == 0 else list(reversed(runs))):
                w, c = runs[k]()
                t["wall"][k].append(w)
                t["cpu"][k].append(c)
        steps = len(X) // bs
        res: dict[str, Any] = {"repeats": reps, "steps_per_epoch": steps}
        for clk, tt in t.items():
            r = lambda a, b: round(med([x / y for x, y in zip(tt[a], tt[b])]), 3)
            res[clk] = {"median_seconds": {k: round(med(v), 4) for k, v in tt.items()},
                        "kdlab_over_hand_ce": r("kdlab_ce", "hand_ce"),
                        "kdlab_over_hand_kd_cache": r("kdlab_kd_cache", "hand_kd_cache"),
                        "extra_ms_per_step_ce": round(1000 * (med(tt["kdlab_ce"]) - med(tt["hand_ce"])) / steps, 3),
                        "extra_ms_per_step_kd_cache": round(1000 * (med(tt["kdlab_kd_cache"])
                                                                    - med(tt["hand_kd_cache"])) / steps, 3)}
        out[name] = res
        print(f"  c {name}: " + json.dumps({c: {k: v for k, v in res[c].items() if k != 'median_seconds'}
                                            for c in ("wall", "cpu")}), flush=True)
    return out


# ---------------------------------------------------------------- d

def part_d(args, work: Path) -> dict[str, Any]:
    data = fmnist(args.d_subset)
    torch.manual_seed(0)
    module = calibrate_bn(create_model(args.teacher, 10, 1, 28))
    teacher = FrozenTeacher(module)
    cl = copy.deepcopy(module).to(memory_format=torch.channels_last)
    teacher_cl = FrozenTeacher(cl, lambda x: x.contiguous(memory_format=torch.channels_last))
    N = len(data.train)
    bs = 512

    def infer(t) -> tuple[float, float]:
        return clock(lambda: [t(b) for b in Loader(data.train, bs)])

    paths: dict[str, Path] = {}

    def build(mode: str) -> tuple[float, float]:
        def go() -> None:
            paths[mode] = build_cache(teacher, data, work / f"d_{mode}", accelerate=mode, batch_size=bs, log=None)
        return clock(go)

    runs: dict[str, Callable[[], tuple[float, float]]] = {
        "eager_inference": lambda: infer(teacher),
        "channels_last_inference": lambda: infer(teacher_cl),
        "build_eager": lambda: build("eager"),
        "build_fold_bn": lambda: build("fold_bn"),
        "build_onnx": lambda: build("onnx"),
    }
    if args.compile:
        compiled = FrozenTeacher(torch.compile(copy.deepcopy(module)))
        t0 = time.perf_counter()
        compiled(next(iter(Loader(data.train, bs))))
        compile_s = time.perf_counter() - t0
        runs["compiled_inference"] = lambda: infer(compiled)
    for f in (runs["eager_inference"],):
        f()
    times = run_interleaved(runs, args.repeats_d, "d")
    ref = np.array(CachedTeacher(paths["eager"]).store.arrays["logits"])
    diffs = {}
    for mode in ("fold_bn", "onnx"):
        c = CachedTeacher(paths[mode])
        got = np.array(c.store.arrays["logits"])
        diffs[mode] = {"built_with": c.manifest["built_with"],
                       "max_rel_diff_vs_eager": float(np.abs(got - ref).max() / np.abs(ref).max())}
    x = next(iter(Loader(data.train, bs)))
    diffs["channels_last"] = {"max_rel_diff_vs_eager": float((teacher_cl(x).logits - teacher(x).logits).abs().max()
                                                              / teacher(x).logits.abs().max())}
    out: dict[str, Any] = {"setup": {"teacher": args.teacher, "samples": N, "batch": bs, "repeats": args.repeats_d},
                           "check_vs_eager": diffs}
    for clk, t in times.items():
        n = len(t["eager_inference"])
        out[clk] = {"median_seconds": {k: round(med(v), 3) for k, v in t.items()},
                    "samples_per_second": {k: round(N / med(v), 1) for k, v in t.items()},
                    "speed_vs_eager_inference": {k: round(med([t["eager_inference"][i] / v[i] for i in range(n)]), 3)
                                                 for k, v in t.items()},
                    "raw": {k: [round(x, 3) for x in v] for k, v in t.items()}}
    if args.compile:
        out["compile_seconds"] = round(compile_s, 1)
    return out


# ---------------------------------------------------------------- e

def synthetic(n: int, dim: int, classes: int) -> DataSplits:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, dim, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    nv = 2048
    mk = lambda xx, yy: Split(xx, yy, torch.zeros(dim), torch.ones(dim))
    return DataSplits("synthetic", mk(x, y), mk(x[:nv], y[:nv]), mk(x[:nv], y[:nv]), [str(i) for i in range(classes)])


E_CLASSES, E_FEAT = 10, 2048  # per row: 10 fp32 logits + a 2048-d fp32 'pooled' teacher feature (8 KiB)


def part_e(args, work: Path) -> dict[str, Any]:
    from kdlab.store import ArraySpec, StoreWriter

    n = args.e_samples
    data = synthetic(n, 16, E_CLASSES)
    path = work / f"e_cache_{n}"
    size = n * (E_CLASSES + E_FEAT) * 4
    if not (path / "manifest.json").exists():
        info = {"kind": "logits", "k": None, "dtype": "float32", "features": ["pooled"], "num_classes": E_CLASSES,
                "seed": 0, "teacher": "synthetic", "data": data.fingerprint(), "augment": None}
        g = np.random.default_rng(0)
        t0 = time.perf_counter()
        specs = [ArraySpec("logits", (E_CLASSES,), "float32"), ArraySpec("feat.pooled", (E_FEAT,), "float32")]
        with StoreWriter(path, n, 1, specs, info) as w:
            step = 8192
            for s in range(0, n, step):
                idx = np.arange(s, min(n, s + step))
                w.write(idx, np.zeros_like(idx), {
                    "logits": g.standard_normal((len(idx), E_CLASSES), dtype=np.float32) * 3,
                    "feat.pooled": np.abs(g.standard_normal((len(idx), E_FEAT), dtype=np.float32))})
            w.commit()
        print(f"  e: wrote {size / 2**30:.2f} GiB synthetic cache in {time.perf_counter() - t0:.1f}s", flush=True)
    budget = size // 2
    res = {"setup": {"samples": n, "row": f"{E_CLASSES} logits + {E_FEAT}-d pooled feature, fp32",
                     "cache_bytes": size, "budget_bytes": budget, "student": "mlp_tiny (16 -> 32 -> 10)",
                     "methods": "0.1 CE + 0.9 KD + FitNet(pooled, weight 1)", "batch": 512, "epochs": 1}}
    for name, max_res in (("release_256MiB", 256 << 20), ("no_release", None)):
        cmd = [sys.executable, __file__, "--e-child", str(path), "--e-samples", str(n),
               "--e-max-resident", str(max_res or 0), "--threads", str(args.threads)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(p.stderr)
        child = json.loads(p.stdout.strip().splitlines()[-1])
        child["within_budget"] = child["peak_rss_mb"] * 2**20 <= budget
        res[name] = child
        print(f"  e {name}: {child}", flush=True)
    return res


def e_child(args) -> None:
    torch.set_num_threads(args.threads)
    data = synthetic(args.e_samples, 16, E_CLASSES)
    t0 = time.perf_counter()
    ct = CachedTeacher(args.e_child, verify=True, max_resident=args.e_max_resident or None)
    verify_s = time.perf_counter() - t0
    base = rss_mb()
    torch.manual_seed(0)
    student = create_model("mlp_tiny", E_CLASSES, in_channels=16, image_size=1)
    methods = [*kd_methods(), create_method("fitnet", hint_layer="pooled", weight=1.0)]
    t0 = time.perf_counter()
    r = fit(Distiller(student, ct, methods), data, Schedule(epochs=1, batch_size=512, eval_batch_size=1024),
            loader=cache_loader(data, ct, 512, seed=0), progress=False)
    # VmHWM: this process's peak resident set (ru_maxrss would include the parent's, inherited at exec)
    out = {"max_resident_bytes": args.e_max_resident or None, "verify_seconds": round(verify_s, 1),
           "rss_before_fit_mb": round(base, 1), "peak_rss_mb": round(rss_mb("VmHWM"), 1),
           "epoch_seconds": r.history[0]["epoch_seconds"], "fit_seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(out))


# ---------------------------------------------------------------- f, g

def fm_teacher(args, work: Path, data: DataSplits) -> nn.Module:
    """A cnn_medium teacher trained on the subset (kept in the work directory between invocations)."""
    from safetensors.torch import load_file, save_file

    f = work / f"fm_teacher_{args.fg_subset}.safetensors"
    torch.manual_seed(0)
    model = create_model("cnn_medium", 10, 1, 28)
    if f.is_file():
        model.load_state_dict(load_file(str(f)))
        return model.eval()
    t0 = time.perf_counter()
    r = fit(Distiller(model, None, [create_method("ce")]), data, Schedule(epochs=args.teacher_epochs, batch_size=128),
            seed=0, progress=False)
    model.load_state_dict(r.best_state)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(f))
    print(f"  teacher cnn_medium trained in {time.perf_counter() - t0:.0f}s, best val {r.best['val_acc']:.4f}",
          flush=True)
    return model.eval()


def test_acc(model: nn.Module, data: DataSplits) -> float:
    from kdlab.api import evaluate

    return float(evaluate(model, data)["acc"])


def part_f(args, work: Path) -> dict[str, Any]:
    data = fmnist(args.fg_subset)
    teacher = FrozenTeacher(fm_teacher(args, work, data))
    rows: dict[str, Any] = {"teacher_test_acc": test_acc(teacher.module, data)}
    caches = {"full": None, **{f"top{k}": k for k in (1, 5, 10)}}
    built = {name: CachedTeacher(build_cache(teacher, data, work / f"f_{name}", k=k, log=None))
             for name, k in caches.items()}
    sched = Schedule(epochs=args.student_epochs, batch_size=128)
    for name, ct in built.items():
        accs = []
        for seed in args.seeds:
            torch.manual_seed(seed)
            s = create_model("cnn_tiny", 10, 1, 28)
            r = fit(Distiller(s, ct, kd_methods()), data, sched, seed=seed, loader=cache_loader(data, ct, 128, seed),
                    progress=False)
            s.load_state_dict(r.best_state)
            accs.append(test_acc(s, data))
        rows[name] = {"test_acc": accs, "mean": round(float(np.mean(accs)), 4),
                      "bytes": sum(a["bytes"] for a in ct.manifest["arrays"].values())}
        print(f"  f {name}: {rows[name]}", flush=True)
    accs = []
    for seed in args.seeds:
        torch.manual_seed(seed)
        s = create_model("cnn_tiny", 10, 1, 28)
        r = fit(Distiller(s, None, [create_method("ce")]), data, sched, seed=seed, progress=False)
        s.load_state_dict(r.best_state)
        accs.append(test_acc(s, data))
    rows["ce_only"] = {"test_acc": accs, "mean": round(float(np.mean(accs)), 4)}
    rows["setup"] = {"train_samples": len(data.train), "test_samples": len(data.test), "student": "cnn_tiny",
                     "teacher": "cnn_medium", "epochs": args.student_epochs, "seeds": args.seeds,
                     "method": "0.1 CE + 0.9 KD (T=4)"}
    return rows


def part_g(args, work: Path) -> dict[str, Any]:
    from kdlab.api import run
    from kdlab.config import load_config

    data = fmnist(args.fg_subset, augment=True)
    plain = fmnist(args.fg_subset)
    teacher = FrozenTeacher(fm_teacher(args, work, plain))
    methods = {"kd": [{"name": "ce", "weight": 0.1}, {"name": "kd", "weight": 0.9, "T": 4.0}],
               "dkd": [{"name": "ce"}, {"name": "dkd"}],
               "dist": [{"name": "ce"}, {"name": "dist"}]}
    E = args.student_epochs
    cache = work / "g_cache"
    if cache.exists():
        import shutil

        shutil.rmtree(cache)

    def cfg(method: str, seed: int, cached: bool):
        base = {"data": {"name": "fashion-mnist", "subset": args.fg_subset, "augment": True, "split_seed": 0},
                "student": {"name": "cnn_tiny"}, "methods": methods[method], "train": {"epochs": E, "batch_size": 128},
                "seed": seed, "report": False}
        if cached:
            base.update(cache={"dir": str(cache), "views": E})
        return load_config(base=base)

    res: dict[str, Any] = {"setup": {"train_samples": len(data.train), "augment": "crop pad 2 + flip", "epochs": E,
                                     "cache_views": E, "student": "cnn_tiny", "teacher": "cnn_medium",
                                     "methods": list(methods), "seeds": args.seeds}}
    for arm in ("cached", "live") if not args.g_live_first else ("live", "cached"):
        t0, c0 = time.perf_counter(), time.process_time()
        accs: dict[str, list[float]] = {}
        for method in methods:
            for seed in args.seeds:
                r = run(cfg(method, seed, arm == "cached"), data=data, teacher=teacher, save=False, progress=False)
                accs.setdefault(method, []).append(round(r.test["acc"], 4))
        res[arm] = {"wall_seconds": round(time.perf_counter() - t0, 1),
                    "cpu_seconds": round(time.process_time() - c0, 1), "test_acc": accs,
                    "mean": {m: round(float(np.mean(v)), 4) for m, v in accs.items()}}
        print(f"  g {arm}: {res[arm]}", flush=True)
    res["cached"]["build_seconds"] = json.loads((cache / "manifest.json").read_text())["build_seconds"]
    res["speedup_live_over_cached"] = {k: round(res["live"][k] / res["cached"][k], 2)
                                       for k in ("wall_seconds", "cpu_seconds")}
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="abcdefg")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (1: see cache_speed.md)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--repeats-c", type=int, default=6)
    p.add_argument("--repeats-d", type=int, default=3)
    p.add_argument("--teacher", default="resnet56")
    p.add_argument("--student", default="resnet20")
    p.add_argument("--abc-subset", type=int, default=2560)
    p.add_argument("--d-subset", type=int, default=4552)
    p.add_argument("--e-samples", type=int, default=200_000)
    p.add_argument("--fg-subset", type=int, default=12000)
    p.add_argument("--teacher-epochs", type=int, default=6)
    p.add_argument("--student-epochs", type=int, default=3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--compile", action="store_true", help="also time torch.compile teacher inference (part d)")
    p.add_argument("--g-live-first", action="store_true")
    p.add_argument("--work", default="/tmp/kdlab-cache-bench")
    p.add_argument("--out", default=str(Path(__file__).with_name("cache_speed.json")))
    p.add_argument("--e-child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--e-max-resident", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.e_child:
        return e_child(args)
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    results["env"] = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                      "loadavg_at_start": os.getloadavg()}
    fns = {"a": part_abc, "c": part_c, "d": part_d, "e": part_e, "f": part_f, "g": part_g}
    done: set[str] = set()
    for part in args.parts:
        key = "abc" if part in "ab" else part
        if key in done:
            continue
        done.add(key)
        t0 = time.perf_counter()
        print(f"part {key} ...", flush=True)
        results[key] = fns[key[0]](args, work)
        results[key]["part_seconds"] = round(time.perf_counter() - t0, 1)
        results[key]["loadavg_after"] = os.getloadavg()
        out.write_text(json.dumps(results, indent=1))
        print(f"part {key} done in {results[key]['part_seconds']}s", flush=True)


if __name__ == "__main__":
    main()
