"""CPU options for training and teacher inference: which pay on this machine. Results: cpu_options.md.

Parts (``--parts ticaldp``; each timing is a median over repeats interleaved in one process, wall-clock and
CPU time; every arm's outputs are checked against eager):

t  one training step (forward, KD-from-cache loss, backward, SGD) of kdlab's ``train_step``:
   eager, channels_last, torch.compile (inductor; its compile time reported apart), bf16 autocast
i  teacher inference (no_grad, batch 512): eager, channels_last, torch.compile, bf16 autocast,
   BatchNorm folded, ONNX Runtime
d  data: kdlab's Loader (index-gathering one in-memory tensor) vs torch DataLoader over the same
   tensors with 0, 1 and 2 worker processes; loading alone and a whole training epoch
c  kdlab's ``train.channels_last`` (on by default): a training epoch of ``fit`` with it on and off,
   for every CNN family (weights converted to NHWC; the inputs follow)
a  accuracy with ``train.channels_last`` on and off: the main job (cnn_tiny distilled from the
   shipped teacher through a cache, 5 epochs, full Fashion-MNIST), seeds 0, 1, 2; and the
   precision of one training step against float64
l  distillation with a live teacher: kdlab's default ``teacher.accelerate: auto`` (ONNX Runtime)
   and BatchNorm folding against the eager teacher, with a plain student step for reference
p  intra-op threads under contention: 1 thread, 2 threads, 2 threads with OMP_WAIT_POLICY=PASSIVE,
   each in its own process, with the cores free and beside a competing process we start ourselves
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

import torch
import torch.nn.functional as F
from paired import Arm, clock, run_interleaved  # benchmarks/paired.py (the script's own folder is on sys.path)
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kdlab.core import Batch
from kdlab.data import DataSplits, Loader, load_data
from kdlab.engine.distiller import Distiller
from kdlab.engine.loop import train_step
from kdlab.methods import create_method
from kdlab.models import create_model
from kdlab.teachers import FrozenTeacher
from kdlab.teachers.accelerate import accelerate_live, accelerated
from kdlab.teachers.cache_build import build_cache
from kdlab.teachers.cached import CachedTeacher

med = statistics.median


def interleave(arms: dict[str, Arm], repeats: int, tag: str) -> dict[str, Any]:
    """:func:`run_interleaved`, summarised: medians and paired ratios against the first arm."""
    t = run_interleaved(arms, repeats, tag)
    base = next(iter(arms))
    return {c: {"median_s": {k: round(med(v), 4) for k, v in d.items()},
                "speedup_vs_" + base: {k: round(med([d[base][i] / v[i] for i in range(repeats)]), 3)
                                       for k, v in d.items()},
                "raw": {k: [round(x, 4) for x in v] for k, v in d.items()}} for c, d in t.items()}


def calibrate_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics, as after training (so folding them is a real test)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1, generator=g)
            m.running_var.uniform_(0.5, 1.5, generator=g)
    return model


def fmnist(subset: int) -> DataSplits:
    return load_data("fashion-mnist", split_seed=0, subset=subset)


class _Autocast(nn.Module):
    """Runs the wrapped model under CPU bf16 autocast and returns float32 logits."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = self.m(x)
        out.logits = out.logits.float()
        return out


class _ChannelsLast(nn.Module):
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m.to(memory_format=torch.channels_last)

    def forward(self, x):
        return self.m(x.contiguous(memory_format=torch.channels_last))


# ---------------------------------------------------------------- t
def part_t(args, work: Path) -> dict[str, Any]:
    data = fmnist(args.t_subset)
    torch.manual_seed(0)
    teacher = FrozenTeacher(create_model(args.teacher, 10, 1, 28).eval())
    cache = CachedTeacher(build_cache(teacher, data, work / "t_cache", batch_size=512, log=None))
    batches = list(Loader(data.train, 128, shuffle=True, seed=0, drop_last=True))[: args.steps]
    out: dict[str, Any] = {}
    for name in args.students:
        torch.manual_seed(0)
        base = create_model(name, 10, 1, 28)
        variants: dict[str, nn.Module] = {"eager": base, "channels_last": _ChannelsLast(copy.deepcopy(base)),
                                          "bf16_autocast": _Autocast(copy.deepcopy(base))}
        if args.compile:
            variants["compile"] = torch.compile(copy.deepcopy(base))
        steppers = {}
        for k, m in variants.items():
            d = Distiller(m, cache, [create_method("ce", weight=0.1), create_method("kd", T=4.0, weight=0.9)])
            opt = torch.optim.SGD(d.parameters(), lr=0.01, momentum=0.9)
            steppers[k] = (d, opt)
        # check: one step's loss from each variant against eager, from identical weights
        losses = {k: train_step(d, batches[0], o)[0]["loss"] for k, (d, o) in steppers.items()}
        arms = {k: (lambda d=d, o=o: clock(lambda: [train_step(d, b, o) for b in batches]))
                for k, (d, o) in steppers.items()}
        for f in arms.values():  # warm-up (and, for compile, any recompilation)
            f()
        r = interleave(arms, args.repeats, f"t {name}")
        r["per_step_ms"] = {c: {k: round(1000 * v / len(batches), 2) for k, v in r[c]["median_s"].items()}
                            for c in ("wall", "cpu")}
        r["first_step_loss"] = {k: round(v, 5) for k, v in losses.items()}
        out[name] = r
    if args.compile:
        out["compile_seconds"] = _compile_time(args, data)
    out["setup"] = {"steps_per_repeat": len(batches), "batch": 128, "subset": args.t_subset, "repeats": args.repeats,
                    "loss": "0.1 CE + 0.9 KD(T=4) from a cache of the teacher's logits"}
    return out


def _compile_time(args, data: DataSplits) -> dict[str, float]:
    """Seconds to the end of the first compiled training step, in a fresh process (no warm caches)."""
    res = {}
    for name in args.students:
        code = (f"import time,torch;from kdlab.models import create_model;torch.set_num_threads({args.threads});"
                f"m=torch.compile(create_model({name!r},10,1,28));x=torch.randn(128,1,28,28);"
                f"t=time.perf_counter();m(x).logits.sum().backward();print(time.perf_counter()-t)")
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(Path(args.work) / f"inductor_{name}_{time.time_ns()}")}
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        res[name] = round(float(p.stdout.strip().splitlines()[-1]), 1) if p.returncode == 0 else p.stderr[-300:]
    return res


# ---------------------------------------------------------------- i
def part_i(args, work: Path) -> dict[str, Any]:
    data = fmnist(args.i_subset)
    torch.manual_seed(0)
    module = create_model(args.teacher, 10, 1, 28)
    calibrate_bn(module)
    module.eval()
    batches = list(Loader(data.train, 512))
    eager = FrozenTeacher(module)
    runners: dict[str, Callable[[Batch], Any]] = {
        "eager": eager,
        "channels_last": FrozenTeacher(_ChannelsLast(copy.deepcopy(module)).eval()),
        "bf16_autocast": FrozenTeacher(_Autocast(copy.deepcopy(module)).eval()),
        "fold_bn": accelerated(eager, batches[0], "fold_bn")[0],
        "onnx": accelerated(eager, batches[0], "onnx")[0],
    }
    compile_s = None
    if args.compile:
        runners["compile"] = FrozenTeacher(torch.compile(copy.deepcopy(module)))
        compile_s = clock(lambda: runners["compile"](batches[0]))[0]
    ref = eager(batches[0]).logits
    check = {k: float((r(batches[0]).logits.float() - ref).abs().max() / ref.abs().max()) for k, r in runners.items()}
    arms = {k: (lambda r=r: clock(lambda: [r(b) for b in batches])) for k, r in runners.items()}
    for f in arms.values():
        f()
    out = interleave(arms, args.repeats, "i")
    n = sum(len(b) for b in batches)
    out["samples_per_s_cpu"] = {k: round(n / v, 1) for k, v in out["cpu"]["median_s"].items()}
    out["max_rel_diff_vs_eager"] = {k: float(f"{v:.2e}") for k, v in check.items()}
    out["setup"] = {"teacher": args.teacher, "samples": n, "batch": 512, "repeats": args.repeats,
                    "first_call_seconds_compile": None if compile_s is None else round(compile_s, 1)}
    return out


# ---------------------------------------------------------------- c
def part_c(args, work: Path) -> dict[str, Any]:
    from kdlab.engine.loop import Schedule, fit

    data = fmnist(args.c_subset)
    out: dict[str, Any] = {}
    for name in args.c_students:
        def epoch(cl: bool, name: str = name) -> tuple[float, float]:
            torch.manual_seed(0)
            d = Distiller(create_model(name, 10, 1, 28), None, [create_method("ce")])
            t0 = time.process_time()
            r = fit(d, data, Schedule(epochs=1, batch_size=128, channels_last=cl), seed=0, progress=False)
            # fit's epoch_seconds covers the training steps only (no set-up, no evaluation)
            return r.history[0]["epoch_seconds"], time.process_time() - t0
        arms = {"contiguous (off)": lambda: epoch(False), "channels_last (on)": lambda: epoch(True)}
        arms["contiguous (off)"]()
        r = interleave(arms, args.c_repeats, f"c {name}")
        out[name] = {"median_epoch_s": r["wall"]["median_s"],
                     "speedup": r["wall"]["speedup_vs_contiguous (off)"]["channels_last (on)"], "raw": r["wall"]["raw"]}
    out["setup"] = {"train_samples": len(data.train), "batch": 128, "repeats": args.c_repeats,
                    "note": "wall = fit's epoch_seconds (training steps); CPU column includes evaluation and set-up"}
    return out


# ---------------------------------------------------------------- a
def part_a(args, work: Path) -> dict[str, Any]:
    import kdlab
    from kdlab.cli.demo import TEACHER as ASSET

    out: dict[str, Any] = {"runs": []}
    for seed in args.seeds:
        data = load_data("fashion-mnist", split_seed=seed)
        for cl in (False, True):
            r = kdlab.distill(str(ASSET), "cnn_tiny", data, method="kd", T=4.0, alpha=0.9, epochs=args.a_epochs,
                              seed=seed, cache=str(work / f"a_cache_s{seed}"), channels_last=cl)
            rec = {"seed": seed, "channels_last": cl, "acc": r.test["acc"], "f1": r.test["f1"],
                   "median_epoch_s": med([h["epoch_seconds"] for h in r.history])}
            out["runs"].append(rec)
            print("  a", rec, flush=True)
    for cl in (False, True):
        accs = [x["acc"] for x in out["runs"] if x["channels_last"] == cl]
        out[f"mean_acc_channels_last_{cl}"] = round(100 * statistics.mean(accs), 2)
        out[f"std_acc_channels_last_{cl}"] = round(100 * statistics.stdev(accs), 2) if len(accs) > 1 else None
    out["step_precision"] = _step_precision()
    return out


def _step_precision() -> dict[str, dict[str, float]]:
    """Max relative error against float64 of the loss and the first conv's weight gradient, one
    training step of resnet8 and cnn_tiny on a Fashion-MNIST batch of 256."""
    data = fmnist(2000)
    b = next(iter(Loader(data.train, 256, shuffle=True, seed=0)))
    res: dict[str, dict[str, float]] = {}
    for name in ("resnet8", "cnn_tiny"):
        torch.manual_seed(0)
        base = create_model(name, 10, 1, 28)
        grads = {}
        for mode in ("float64", "contiguous", "channels_last"):
            m, x = copy.deepcopy(base), b.inputs
            if mode == "float64":
                m, x = m.double(), x.double()
            if mode == "channels_last":
                m = m.to(memory_format=torch.channels_last)
            loss = F.cross_entropy(m(x).logits, b.targets)
            loss.backward()
            conv = next(p for n, p in m.named_parameters() if p.dim() == 4)
            grads[mode] = (float(loss.detach()), conv.grad.double())
        ref_loss, ref_g = grads["float64"]
        res[name] = {f"{mode} {what}": float(f"{err:.2e}") for mode in ("contiguous", "channels_last")
                     for what, err in (("loss", abs(grads[mode][0] - ref_loss) / abs(ref_loss)),
                                       ("first conv grad",
                                        float((grads[mode][1] - ref_g).abs().max() / ref_g.abs().max())))}
    return res


# ---------------------------------------------------------------- l
def part_l(args, work: Path) -> dict[str, Any]:
    data = fmnist(args.t_subset)
    torch.manual_seed(0)
    module = create_model(args.teacher, 10, 1, 28).eval()
    calibrate_bn(module)
    eager = FrozenTeacher(module)
    batches = list(Loader(data.train, 128, shuffle=True, seed=0, drop_last=True))[: args.steps]
    needs = [frozenset({"logits"})]
    teachers = {"plain (no teacher)": None, "eager teacher": eager,
                "onnx teacher (auto)": accelerate_live(eager, batches[0], needs, "auto"),
                "fold_bn teacher": accelerate_live(eager, batches[0], needs, "fold_bn")}
    assert getattr(teachers["onnx teacher (auto)"], "mode", None) == "onnx"
    torch.manual_seed(0)
    base = create_model(args.students[0], 10, 1, 28)
    arms = {}
    for k, t in teachers.items():
        methods = [create_method("ce")] if t is None else [create_method("ce", weight=0.1),
                                                         create_method("kd", T=4.0, weight=0.9)]
        d = Distiller(copy.deepcopy(base), t, methods)
        opt = torch.optim.SGD(d.parameters(), lr=0.01, momentum=0.9)
        arms[k] = (lambda d=d, o=opt: clock(lambda: [train_step(d, b, o) for b in batches]))
    fwd = {"eager teacher forward alone": (lambda: clock(lambda: [eager(b) for b in batches])),
           "onnx teacher forward alone": (lambda t=teachers["onnx teacher (auto)"]:
                                          clock(lambda: [t(b) for b in batches]))}
    arms.update(fwd)
    for f in arms.values():
        f()
    out = interleave(arms, args.repeats, "l")
    out["setup"] = {"teacher": args.teacher, "student": args.students[0], "steps_per_repeat": len(batches),
                    "batch": 128, "repeats": args.repeats, "loss": "0.1 CE + 0.9 KD(T=4)"}
    return out


# ---------------------------------------------------------------- d
def part_d(args, work: Path) -> dict[str, Any]:
    data = fmnist(args.d_subset)
    split = data.train
    X, Y = split.x, split.y  # the raw uint8 images and labels Loader gathers from
    mean, std, scale = split.mean, split.std, split.scale
    idx = torch.arange(len(Y))

    def collate(items):
        i = torch.stack([it[0] for it in items])
        x = torch.stack([it[1] for it in items])
        y = torch.stack([it[2] for it in items])
        x = x.float() * scale if scale != 1.0 else x.float()
        return Batch((x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1), y, i, torch.zeros_like(i))

    ds = TensorDataset(idx, X, Y)
    loaders: dict[str, Callable[[], Any]] = {"kdlab Loader": lambda: Loader(split, 128, shuffle=True, seed=0)}
    for w in args.workers:
        loaders[f"DataLoader, {w} workers"] = (lambda w=w: DataLoader(
            ds, batch_size=128, shuffle=True, num_workers=w, collate_fn=collate,
            generator=torch.Generator().manual_seed(0), persistent_workers=False))
    # check: same normalised inputs for the same indices
    check = float((split.gather(torch.arange(64)) - collate([ds[i] for i in range(64)]).inputs).abs().max())
    load_arms = {k: (lambda mk=mk: clock(lambda: [b for b in mk()])) for k, mk in loaders.items()}
    out: dict[str, Any] = {"loading_only": interleave(load_arms, args.repeats, "d load")}
    torch.manual_seed(0)
    model = create_model(args.d_student, 10, 1, 28)
    d = Distiller(model, None, [create_method("ce")])
    opt = torch.optim.SGD(d.parameters(), lr=0.01, momentum=0.9)
    train_arms = {k: (lambda mk=mk: clock(lambda: [train_step(d, b, opt) for b in mk()])) for k, mk in loaders.items()}
    out["training_epoch"] = interleave(train_arms, args.repeats, f"d train {args.d_student}")
    out["max_abs_diff_inputs"] = check
    out["setup"] = {"train_samples": len(Y), "batch": 128, "student": args.d_student, "repeats": args.repeats}
    return out


# ---------------------------------------------------------------- p
def p_child(model: str, threads: int, steps: int) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    m = create_model(model, 10, 1, 28)
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    times = []
    for s in range(steps + 3):
        t = time.perf_counter()
        loss = F.cross_entropy(m(x).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if s >= 3:
            times.append(time.perf_counter() - t)
    print(json.dumps({"median_step_s": med(times)}))


def part_p(args, work: Path) -> dict[str, Any]:
    configs = {"1 thread": (1, {}), "2 threads": (2, {}),
               "2 threads, OMP_WAIT_POLICY=PASSIVE": (2, {"OMP_WAIT_POLICY": "PASSIVE"})}
    out: dict[str, Any] = {}
    for load in ("cores free", "beside one busy process"):
        hog = None
        if load != "cores free":  # a competitor we control: one thread of matrix products
            hog = subprocess.Popen([sys.executable, "-c",
                                    "import torch;torch.set_num_threads(1);a=torch.randn(512,512)\nwhile True: a@a"])
            time.sleep(2)
        res: dict[str, list[float]] = {k: [] for k in configs}
        for rep in range(args.repeats):
            for k in (list(configs) if rep % 2 == 0 else list(reversed(configs))):
                n, extra = configs[k]
                env = {**os.environ, "OMP_NUM_THREADS": str(n), **extra}
                env.pop("OMP_WAIT_POLICY", None) if not extra else None
                p = subprocess.run([sys.executable, __file__, "--p-child", args.p_student, str(n), str(args.p_steps)],
                                   capture_output=True, text=True, env=env, check=True)
                res[k].append(json.loads(p.stdout.strip().splitlines()[-1])["median_step_s"])
            print(f"  p [{load}] rep {rep}: " + ", ".join(f"{k} {v[-1] * 1000:.1f} ms" for k, v in res.items()),
                  flush=True)
        if hog is not None:
            hog.kill()
            hog.wait()
        out[load] = {"median_step_ms": {k: round(1000 * med(v), 2) for k, v in res.items()},
                     "raw_ms": {k: [round(1000 * x, 2) for x in v] for k, v in res.items()}}
    out["setup"] = {"student": args.p_student, "batch": 128, "steps": args.p_steps, "repeats": args.repeats,
                    "loadavg_at_end": os.getloadavg()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="ticaldp")
    p.add_argument("--a-epochs", type=int, default=5)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--c-subset", type=int, default=1600)
    p.add_argument("--c-repeats", type=int, default=3)
    p.add_argument("--c-students", nargs="+",
                   default=["cnn_tiny", "cnn_small", "resnet8", "resnet20", "wrn_16_2", "vgg8", "mobilenetv2",
                            "shufflenetv2"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--teacher", default="resnet56")
    p.add_argument("--students", nargs="+", default=["resnet20", "cnn_tiny"])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--t-subset", type=int, default=2560)
    p.add_argument("--i-subset", type=int, default=2900)
    p.add_argument("--d-subset", type=int, default=12000)
    p.add_argument("--d-student", default="cnn_tiny")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--p-student", default="resnet20")
    p.add_argument("--p-steps", type=int, default=15)
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--work", default="/tmp/kdlab-cpu-options")
    p.add_argument("--out", default=str(Path(__file__).with_name("cpu_options.json")))
    p.add_argument("--p-child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.p_child:
        return p_child(args.p_child[0], int(args.p_child[1]), int(args.p_child[2]))
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    results["torch"] = torch.__version__
    for part in args.parts:
        print(f"part {part}", flush=True)
        t0 = time.perf_counter()
        results[part] = {**{"t": part_t, "i": part_i, "c": part_c, "a": part_a, "l": part_l, "d": part_d,
                            "p": part_p}[part](args, work),
                         "part_wall_s": None}
        results[part]["part_wall_s"] = round(time.perf_counter() - t0, 1)
        results[part]["loadavg"] = os.getloadavg()
        out_path.write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items()}, indent=1)[:4000])


if __name__ == "__main__":
    main()
