"""Student architecture search under a deployment budget (``kdlab search``).

A search config is a run config (``data``, ``teacher``, ``methods``, ``train``, ``seed``, optional
``cache``) plus a ``search:`` section (:class:`SearchSpec`, unknown keys are errors)::

    search:
      families:                          # each family's knobs: every combination is a candidate
        - {name: cnn, options: {widths: [[8, 16, 32], [16, 32, 64]], convs_per_stage: [1, 2]}}
        - {name: resnet, options: {depth: [8, 14], width: [8, 16]}}
        - {name: mobilenetv2, options: {width_mult: [0.25, 0.5], expand_ratio: [2, 6]}}
        - {name: vit, options: {dim: [32, 64], depth: [2, 4]}}
      budget: {latency_ms: 1.5}          # and/or params, mflops
      latency: {batch_size: 1, threads: 1, repeats: 30}
      rungs: [1, 3]                      # epochs of the short distillations, fidelity by fidelity
      keep: 0.5                          # fraction promoted from one rung to the next
      reference: {name: resnet8}         # a hand-picked student to beat (trained at every rung)

1. Every combination of every family's knobs is built for the data; its parameters, MFLOPs
   (:func:`kdlab.evaluate.cost.count_flops`) and latency are measured. Latency is **measured** in
   ONNX Runtime on this machine at the stated batch size and thread count (median of ``repeats``
   runs after a warm-up) and cached per architecture in ``<dir>/latency.json`` (keyed by the
   architecture, batch size, threads, machine and ONNX Runtime version). A candidate over any
   budget is rejected, with the reason in the report.
2. Up to ``candidates`` admissible architectures (families taken in turn) are scored by a short
   distillation from the teacher (its outputs built once into a cache shared by every candidate,
   as in :mod:`kdlab.tune`), on the validation split; the test split is sealed.
3. Multi-fidelity: after each rung the best ``keep`` fraction, ranked by Pareto rank on
   (validation accuracy ↑, measured latency ↓) then accuracy, is trained again for the next rung's
   epochs; the rest stop.
4. The Pareto front of the last rung is the answer: ``report.md`` has it as a table and a plot
   (``pareto.png``); ``student.yaml`` is the run config that trains the most accurate front member
   fully (``kdlab distill <dir>/student.yaml``).
"""
from __future__ import annotations

import io
import itertools
import json
import math
import platform
import random
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from pydantic import Field, model_validator
from torch import nn

from kdlab.config import RunConfig, load_config
from kdlab.data import DataSplits, load_data_spec
from kdlab.errors import ConfigError, IncompatibleError, NonFiniteLossError
from kdlab.evaluate.cost import architecture_key, count_flops, count_params
from kdlab.models.contract import as_outputs
from kdlab.models.load import model_for_data
from kdlab.objective import DEFAULT_METHOD, parse_objective
from kdlab.spec import Spec
from kdlab.tune import method_needs, seal_test, split_config, teacher_source, train_short, validate_section


class Family(Spec):
    """A registered model and the values of each of its knobs (every combination is a candidate)."""

    name: str
    options: dict[str, list[Any]] = {}


class Budget(Spec):
    """Deployment limits a candidate must meet (None: no limit)."""

    params: int | None = Field(None, gt=0)
    mflops: float | None = Field(None, gt=0)
    latency_ms: float | None = Field(None, gt=0)


class LatencySpec(Spec):
    """How latency is measured: ONNX Runtime on this machine."""

    batch_size: int = Field(1, ge=1)
    threads: int = Field(1, ge=1)
    repeats: int = Field(30, ge=3)
    warmup: int = Field(5, ge=0)
    cache: str | None = None  # JSON file of measured latencies; default <dir>/latency.json


class Reference(Spec):
    name: str
    options: dict[str, Any] = {}


def _default_families() -> list[Family]:
    return [Family(name="cnn", options={"widths": [[8, 16, 32], [16, 32, 64], [24, 48, 96]],
                                        "convs_per_stage": [1, 2]}),
            Family(name="resnet", options={"depth": [8, 14], "width": [8, 12, 16]}),
            Family(name="mobilenetv2", options={"width_mult": [0.25, 0.5], "expand_ratio": [2, 6]}),
            Family(name="vit", options={"dim": [32, 64], "depth": [2, 4], "heads": [4], "patch": [4, 7]})]


class SearchSpec(Spec):
    """The ``search:`` section of a search config."""

    dir: str | None = None  # search directory; default runs/search-<data>
    families: list[Family] = Field(default_factory=_default_families, min_length=1)
    budget: Budget = Budget()
    latency: LatencySpec = LatencySpec()
    candidates: int = Field(12, ge=1)  # admissible architectures scored at the first rung
    rungs: list[int] = Field([1, 3], min_length=1)  # epochs of each fidelity, increasing
    keep: float = Field(0.5, gt=0, le=1)  # fraction promoted to the next rung
    reference: Reference | None = None  # a hand-picked student to compare with (trained at every rung)
    seed: int = Field(0, ge=0)  # which admissible architectures are drawn

    @model_validator(mode="after")
    def _increasing(self) -> "SearchSpec":
        if any(b <= a for a, b in zip(self.rungs, self.rungs[1:])) or self.rungs[0] < 1:
            raise ValueError(f"rungs must be increasing epoch counts >= 1, got {self.rungs}")
        return self


def load_search(path: str | Path | None, overrides: Sequence[str] = (), base: dict[str, Any] | None = None
                ) -> tuple[RunConfig, SearchSpec]:
    # the students are scored by distillation: kdlab's default objective unless the config names one
    default = {"methods": parse_objective(DEFAULT_METHOD)}
    cfg, raw = split_config(path, list(overrides), "search", {**default, **(base or {})})
    return cfg, validate_section(SearchSpec, raw, "search")


# ---------------------------------------------------------------- candidates and their cost

@dataclass
class Candidate:
    name: str
    options: dict[str, Any]
    params: int = 0
    mflops: float = 0.0
    latency_ms: float = float("nan")
    rejected: str | None = None  # why it is over budget
    reference: bool = False
    val_acc: dict[int, float] = field(default_factory=dict)  # rung epochs -> best validation accuracy
    seconds: dict[int, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        opts = ", ".join(f"{k}={_short(v)}" for k, v in self.options.items())
        return f"{self.name}({opts})" if opts else self.name

    def score(self) -> float:
        return self.val_acc[max(self.val_acc)] if self.val_acc else float("-inf")


def _short(v: Any) -> str:
    return "-".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def grid(families: Sequence[Family]) -> list[tuple[str, dict[str, Any]]]:
    """Every (model name, options) combination of every family's knobs, families in turn."""
    per: list[list[tuple[str, dict[str, Any]]]] = []
    for fam in families:
        keys = list(fam.options)
        per.append([(fam.name, dict(zip(keys, combo))) for combo in itertools.product(*fam.options.values())])
    return per_family_round_robin(per)


def per_family_round_robin(per: list[list[Any]]) -> list[Any]:
    out: list[Any] = []
    for row in itertools.zip_longest(*per):
        out += [x for x in row if x is not None]
    return out


class _Logits(nn.Module):
    """The model's logits alone (what is deployed), for the ONNX export."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return as_outputs(self.model(x)).logits


def machine_id() -> str:
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:  # the CPU's model name says more than the architecture
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}|onnxruntime {onnxruntime.__version__}"


def onnx_latency_ms(model: nn.Module, input_shape: tuple[int, ...], *, batch_size: int = 1, threads: int = 1,
                    repeats: int = 30, warmup: int = 5) -> float:
    """Median wall time (ms) of one ONNX Runtime inference of ``model`` on ``[batch_size, *input_shape]``
    with ``threads`` intra-op threads (one inter-op thread), after ``warmup`` runs."""
    import onnxruntime as ort

    net = _Logits(model).eval()
    x = torch.randn(batch_size, *input_shape)
    buf = io.BytesIO()
    # traced with autograd on: in eval mode under no_grad, nn.TransformerEncoderLayer takes a fused
    # fast path that has no ONNX export
    with warnings.catch_warnings(), torch.enable_grad():
        warnings.simplefilter("ignore")  # the exporter's tracer chatter
        torch.onnx.export(net, (x,), buf, input_names=["x"], output_names=["logits"],  # type: ignore[arg-type]
                          opset_version=17, dynamo=False)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    a = x.numpy()
    for _ in range(warmup):
        sess.run(["logits"], {"x": a})
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(["logits"], {"x": a})
        times.append((time.perf_counter() - t) * 1000)
    return float(statistics.median(times))


class LatencyCache:
    """Measured latencies in a JSON file, one entry per (architecture, batch size, threads, machine)."""

    def __init__(self, path: Path, spec: LatencySpec) -> None:
        self.path, self.spec = path, spec
        self.entries: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
        self.measured = 0

    def key(self, model: nn.Module, input_shape: tuple[int, ...]) -> str:
        return json.dumps({"arch": architecture_key(model), "input": list(input_shape),
                           "batch_size": self.spec.batch_size, "threads": self.spec.threads,
                           "machine": machine_id()}, sort_keys=True)

    def get(self, model: nn.Module, input_shape: tuple[int, ...]) -> float:
        k = self.key(model, input_shape)
        if k not in self.entries:
            ms = onnx_latency_ms(model, input_shape, batch_size=self.spec.batch_size, threads=self.spec.threads,
                                 repeats=self.spec.repeats, warmup=self.spec.warmup)
            self.entries[k] = {"median_ms": ms, "repeats": self.spec.repeats,
                               "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            self.measured += 1
            self.save()
        return float(self.entries[k]["median_ms"])

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.entries, indent=1))
        tmp.replace(self.path)


def measure(c: Candidate, data: DataSplits, budget: Budget, lat: LatencyCache) -> Candidate:
    """Fill the candidate's cost and, when it is over a budget, why. Latency is measured only for
    an architecture within the parameter and FLOP budgets (the cheap checks first)."""
    model = model_for_data(c.name, data, **c.options).eval()
    shape = tuple(data.input_shape)
    c.params = count_params(model)
    c.mflops = count_flops(model, shape) / 1e6
    if budget.params is not None and c.params > budget.params:
        c.rejected = f"{c.params} parameters > {budget.params}"
        return c
    if budget.mflops is not None and c.mflops > budget.mflops:
        c.rejected = f"{c.mflops:.2f} MFLOPs > {budget.mflops}"
        return c
    c.latency_ms = lat.get(model, shape)
    if budget.latency_ms is not None and c.latency_ms > budget.latency_ms:
        c.rejected = f"latency {c.latency_ms:.3f} ms > {budget.latency_ms:.4g} ms"
    return c


# ---------------------------------------------------------------- Pareto ranking

def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """(accuracy ↑, latency ↓): ``a`` is at least as good in both and better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def pareto_ranks(points: Sequence[tuple[float, float]]) -> list[int]:
    """Non-dominated sorting: rank 0 is the Pareto front, rank 1 the front of the rest, ..."""
    ranks = [-1] * len(points)
    left = set(range(len(points)))
    r = 0
    while left:
        front = {i for i in left if not any(dominates(points[j], points[i]) for j in left if j != i)}
        for i in front:
            ranks[i] = r
        left -= front
        r += 1
    return ranks


# ---------------------------------------------------------------- the search

@dataclass
class SearchResult:
    candidates: list[Candidate]
    front: list[Candidate]
    chosen: Candidate | None
    dir: Path
    report: Path
    command: str | None
    reference_dominated_by: list[Candidate]


def search(cfg: RunConfig, spec: SearchSpec, *, data: DataSplits | None = None,
           say: Callable[[str], None] = print) -> SearchResult:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    directory = Path(spec.dir or f"runs/search-{cfg.data.name}")
    directory.mkdir(parents=True, exist_ok=True)
    data = data if data is not None else load_data_spec(cfg.data)
    sealed = seal_test(data, "the search chooses on the validation split only")
    lat = LatencyCache(Path(spec.latency.cache) if spec.latency.cache else directory / "latency.json", spec.latency)
    methods = [m.model_dump() for m in cfg.methods]
    # cost first: every architecture of the grid, within budget or not
    all_c: list[Candidate] = []
    t0 = time.perf_counter()
    for name, options in grid(spec.families):
        all_c.append(measure(Candidate(name, options), sealed, spec.budget, lat))
    ref: Candidate | None = None
    if spec.reference is not None:
        ref = measure(Candidate(spec.reference.name, dict(spec.reference.options), reference=True), sealed,
                      Budget(), lat)
    ok = [c for c in all_c if c.rejected is None]
    say(f"{len(all_c)} architectures, {len(ok)} within budget ({lat.measured} latencies measured, the rest from "
        f"{lat.path}; {time.perf_counter() - t0:.1f}s)")
    if not ok:
        raise ConfigError("no architecture meets the budget: " + "; ".join(f"{c.label}: {c.rejected}"
                                                                            for c in all_c[:3]))
    # families in turn, then a seeded draw within each family when there are more than `candidates`
    rng = random.Random(spec.seed)
    by_family: dict[str, list[Candidate]] = {}
    for c in ok:
        by_family.setdefault(c.name, []).append(c)
    for v in by_family.values():
        rng.shuffle(v)
    pool: list[Candidate] = per_family_round_robin(list(by_family.values()))[:spec.candidates]
    source = teacher_source(cfg, data, [method_needs(methods)], directory / "cache", max(spec.rungs), say)
    alive = pool + ([ref] if ref is not None else [])
    for i, epochs in enumerate(spec.rungs):
        sched = cfg.train.model_copy(update={"epochs": epochs})
        for c in list(alive):
            t = time.perf_counter()
            try:
                r, _ = train_short(cfg, sealed, source, methods, sched, student=(c.name, c.options))
            except (IncompatibleError, NonFiniteLossError) as e:  # this student alone drops out
                c.rejected = f"cannot be distilled: {e}"
                alive.remove(c)
                say(f"rung {i} ({epochs} epochs): {c.label} dropped ({e})")
                continue
            c.val_acc[epochs] = float(r.best["val_acc"])
            c.seconds[epochs] = round(time.perf_counter() - t, 2)
            say(f"rung {i} ({epochs} epochs): {c.label} val_acc {100 * c.val_acc[epochs]:.2f}%  "
                f"latency {c.latency_ms:.3f} ms")
        if i + 1 < len(spec.rungs):
            searched = [c for c in alive if not c.reference]
            ranks = pareto_ranks([(c.val_acc[epochs], c.latency_ms) for c in searched])
            order = sorted(range(len(searched)), key=lambda j: (ranks[j], -searched[j].val_acc[epochs]))
            n_keep = max(1, math.ceil(spec.keep * len(searched)))
            alive = [searched[j] for j in order[:n_keep]] + ([ref] if ref is not None and ref.rejected is None else [])
    last = spec.rungs[-1]
    finalists = [c for c in pool if last in c.val_acc]
    ranks = pareto_ranks([(c.val_acc[last], c.latency_ms) for c in finalists])
    front = sorted((c for c, r in zip(finalists, ranks) if r == 0), key=lambda c: c.latency_ms)
    chosen = max(front, key=lambda c: (c.val_acc[last], -c.latency_ms)) if front else None
    beats = [c for c in front if ref is not None and dominates((c.val_acc[last], c.latency_ms),
                                                                (ref.val_acc[last], ref.latency_ms))]
    command = None
    if chosen is not None:
        raw = cfg.model_dump(mode="json", exclude_none=True)
        raw.pop("cache", None)
        raw["student"] = {"name": chosen.name, "options": chosen.options}
        raw["out"] = str(directory / "final")
        load_config(base=json.loads(json.dumps(raw)))
        import yaml

        (directory / "student.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        command = f"kdlab distill {directory / 'student.yaml'}"
    report = write_report(directory, cfg, spec, all_c, pool, front, chosen, ref, beats, command, source.build_seconds)
    if chosen is not None:
        say(f"Pareto front: {len(front)} students; most accurate {chosen.label} "
            f"({100 * chosen.val_acc[last]:.2f}% val, {chosen.latency_ms:.3f} ms)")
        say(f"train it fully: {command}")
    say(f"report: {report}")
    return SearchResult(all_c, front, chosen, directory, report, command, beats)


def write_report(directory: Path, cfg: RunConfig, spec: SearchSpec, all_c: list[Candidate], pool: list[Candidate],
                 front: list[Candidate], chosen: Candidate | None, ref: Candidate | None, beats: list[Candidate],
                 command: str | None, build_seconds: float) -> Path:
    last = spec.rungs[-1]
    lat = spec.latency
    rows = [c for c in pool] + ([ref] if ref else [])
    (directory / "candidates.json").write_text(json.dumps(
        [{"name": c.name, "options": c.options, "params": c.params, "mflops": round(c.mflops, 4),
          "latency_ms": None if math.isnan(c.latency_ms) else round(c.latency_ms, 4), "rejected": c.rejected,
          "reference": c.reference, "val_acc": {str(k): v for k, v in c.val_acc.items()},
          "seconds": {str(k): v for k, v in c.seconds.items()}} for c in all_c + ([ref] if ref else [])], indent=1))
    plot = plot_front(directory, pool, front, ref, last)
    budget = ", ".join(f"{k} ≤ {v:.4g}" for k, v in spec.budget.model_dump().items() if v is not None) or "none"
    lines = [f"# Student search on `{cfg.data.name}`", "",
             f"Budget: {budget}. Latency: ONNX Runtime on this machine ({machine_id()}), batch {lat.batch_size}, "
             f"{lat.threads} thread{'s' if lat.threads > 1 else ''}, median of {lat.repeats} runs after "
             f"{lat.warmup} warm-up runs, cached per architecture. Scores: best validation accuracy of a short "
             f"distillation ({', '.join(m.name for m in cfg.methods)}) at rungs of {spec.rungs} epochs, the best "
             f"{spec.keep:.0%} by Pareto rank (accuracy ↑, latency ↓) promoted at each rung; the test split was "
             f"sealed. Teacher outputs read from a cache built once (ready in {build_seconds:.1f}s).", "",
             f"{len(all_c)} architectures in the grid, {sum(c.rejected is None for c in all_c)} within budget, "
             f"{len(pool)} scored.", "", "## Pareto front (last rung)", "",
             "| student | params | MFLOPs | latency ms | val acc % |", "|---|---|---|---|---|"]
    for c in front:
        mark = " **(chosen)**" if c is chosen else ""
        lines.append(f"| {c.label}{mark} | {c.params} | {c.mflops:.2f} | {c.latency_ms:.3f} | "
                     f"{100 * c.val_acc[last]:.2f} |")
    if ref is not None and last in ref.val_acc:
        lines += ["", f"Reference {ref.label}: {ref.params} params, {ref.latency_ms:.3f} ms, "
                      f"{100 * ref.val_acc[last]:.2f}% val. "
                  + (f"Dominated by {', '.join(c.label for c in beats)}." if beats
                     else "No front member dominates it at this fidelity.")]
    if plot is not None:
        lines += ["", f"![Pareto front]({plot.name})"]
    if command:
        lines += ["", f"Train the chosen student fully: `{command}`"]
    lines += ["", "## Every scored candidate", "", "| student | params | MFLOPs | latency ms | "
              + " | ".join(f"val % @{e}ep" for e in spec.rungs) + " |", "|---" * (4 + len(spec.rungs)) + "|"]
    for c in rows:
        accs = " | ".join(f"{100 * c.val_acc[e]:.2f}" if e in c.val_acc else "–" for e in spec.rungs)
        lines.append(f"| {c.label}{' (reference)' if c.reference else ''} | {c.params} | {c.mflops:.2f} | "
                     f"{c.latency_ms:.3f} | {accs} |")
    rejected = [c for c in all_c if c.rejected]
    if rejected:
        lines += ["", "## Rejected (over the budget, or could not be distilled)", "",
                  *[f"- {c.label}: {c.rejected}" for c in rejected]]
    out = directory / "report.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def plot_front(directory: Path, pool: list[Candidate], front: list[Candidate], ref: Candidate | None,
               last: int) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [c for c in pool if c.val_acc]
    if not scored:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    fams = sorted({c.name for c in scored})
    for k, fam in enumerate(fams):
        cs = [c for c in scored if c.name == fam]
        ax.scatter([c.latency_ms for c in cs], [100 * c.score() for c in cs], s=18, color=f"C{k}", label=fam,
                   alpha=0.6)
    if front:
        ax.plot([c.latency_ms for c in front], [100 * c.val_acc[last] for c in front], "k-o", ms=4, lw=1,
                label="Pareto front")
    if ref is not None and last in ref.val_acc:
        ax.scatter([ref.latency_ms], [100 * ref.val_acc[last]], marker="*", s=120, color="red", label=ref.label)
    ax.set_xlabel("measured latency (ms, ONNX Runtime)")
    ax.set_ylabel("validation accuracy (%, last rung reached)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    p = directory / "pareto.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p


__all__ = ["SearchSpec", "dominates", "load_search", "onnx_latency_ms", "pareto_ranks", "search"]
