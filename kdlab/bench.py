"""Benchmark grid: methods × teacher→student pairs × seeds, in the style of the published CIFAR-100
tables (teacher and student-alone rows, then each method, mean ± std over seeds).

Every run is a normal kdlab run directory under ``out/runs/``; a finished run (its summary.json
exists) is skipped, so an interrupted grid continues where it stopped. A hand-written ``out/notes.md``
(setup, reading of the table) is appended to ``results.md`` each time the table is rewritten.
"""
from __future__ import annotations

import csv
import json
import os
import statistics
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kdlab.config import DataConfig, TrainConfig, load_config
from kdlab.errors import ConfigError, KDLabError


class Pair(BaseModel):
    model_config = ConfigDict(extra="forbid")
    teacher: str
    student: str
    teacher_checkpoint: str | None = None  # use this instead of training the teacher


class BenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data: DataConfig = DataConfig()
    pairs: list[Pair] = Field(min_length=1)
    methods: list[str | dict[str, Any]] = Field(min_length=1)
    seeds: list[int] = [0, 1, 2]
    teacher_train: TrainConfig = TrainConfig()
    student_train: TrainConfig = TrainConfig()
    # CE weight beside each method, unless the method entry sets `ce`; None: the weight the method's
    # paper pairs with it (kdlab.objective: 0.1 beside Hinton KD and CTKD, 1 otherwise)
    ce_weight: float | None = None
    # seeds a method entry's `tune:` candidates run on; the candidate with the best mean validation
    # accuracy then runs on every seed (its test accuracy is never looked at while choosing)
    tune_seeds: list[int] = Field([0], min_length=1)
    threads: int | None = Field(None, ge=1)
    report: bool = False  # an HTML report per run (off: a grid makes hundreds of runs)


def load_bench(path: str | Path, overrides: list[str] | None = None) -> BenchConfig:
    from kdlab.config import apply_overrides

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"bench config {p} not found")
    raw = yaml.safe_load(p.read_text()) or {}
    raw = apply_overrides(raw, overrides or [])
    try:
        return BenchConfig.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"{p}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def _method_entries(spec: str | dict[str, Any], ce_default: float | None
                    ) -> tuple[str, list[dict[str, Any]], dict[str, Any], dict[str, list[Any]]]:
    """A bench method entry → (label, methods list for the run config, data overrides, tune grid),
    via the one objective parser. Entry keys beside the method's own: ``label``, ``ce`` (its CE
    weight), ``data`` (e.g. ``{teacher_view: independent}``), ``tune`` (``{param: [values]}``)."""
    from kdlab.objective import parse_objective

    items: str | list[dict[str, Any]]
    data: dict[str, Any] = {}
    tune: dict[str, list[Any]] = {}
    if isinstance(spec, str):
        label, items, ce = spec, spec, None
    else:
        entry = dict(spec)
        label = entry.pop("label", None) or entry["name"]
        ce = entry.pop("ce", None)
        data = dict(entry.pop("data", None) or {})
        tune = dict(entry.pop("tune", None) or {})
        items = [entry]
    methods = parse_objective(items)
    if ce is not None or ce_default is not None:
        methods[0]["weight"] = ce if ce is not None else ce_default
    if any(not isinstance(v, list) or not v for v in tune.values()):
        raise ConfigError(f"method entry {label!r}: tune must map parameters to non-empty lists of values")
    return label, methods, data, tune


def _candidates(methods: list[dict[str, Any]], tune: dict[str, list[Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(suffix, methods) for every combination of the tune grid, set on the entry's method (the last)."""
    import itertools

    out = []
    for combo in itertools.product(*tune.values()):
        setting = dict(zip(tune, combo))
        ms = [dict(m) for m in methods]
        ms[-1].update(setting)
        out.append((",".join(f"{k}={v}" for k, v in setting.items()), ms))
    return out


def _summary(r_dir: Path) -> dict[str, Any] | None:
    f = r_dir / "summary.json"
    return json.loads(f.read_text()) if f.is_file() else None


def _run_one(raw: dict[str, Any], command: str, progress: bool) -> None:
    """One grid run (top-level, so a process pool can call it)."""
    from kdlab.schemes.offline import run_config

    run_config(load_config(base=raw), command=command, progress=progress)


def run_bench(cfg: BenchConfig, out: str | Path, progress: bool = False, log=print,
              only_finished: bool = False, jobs: int = 1) -> list[dict[str, Any]]:
    """Run the grid (or, with ``only_finished``, just tabulate the runs already finished).

    ``jobs``: runs in parallel processes (teachers first, one at a time). Each process gets
    ``threads`` intra-op threads, by default the machine's cores divided by ``jobs``.
    """
    if jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {jobs}")
    out = Path(out)
    threads = cfg.threads or (max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None)
    common: dict[str, Any] = {"data": cfg.data.model_dump(), "threads": threads, "report": cfg.report}
    grid: list[tuple[str, str, int, Path]] = []  # (pair tag, label, seed, run dir) in table order
    pending: list[tuple[str, dict[str, Any], str]] = []  # (log line, config, command)
    first: list[tuple[str, dict[str, Any], str]] = []  # tune-search runs, before the grid
    tuning: list[tuple[str, str, str, int, Path]] = []  # (pair tag, label, candidate, seed, run dir)
    later: list[tuple[str, str]] = []  # entries waiting for their search
    teachers: dict[str, str] = {}
    for pair in cfg.pairs:
        tag = f"{pair.teacher}-{pair.student}"
        t_dir = out / "runs" / tag / "teacher"
        teachers[tag] = pair.teacher_checkpoint or str(t_dir / "best")
        if pair.teacher_checkpoint is None and not (t_dir / "summary.json").is_file() and not only_finished:
            log(f"[{tag}] training teacher {pair.teacher}")
            _run_one({**common, "student": {"name": pair.teacher}, "methods": [{"name": "ce"}],
                      "train": cfg.teacher_train.model_dump(), "seed": 0, "out": str(t_dir)}, "train", progress)
        Entry = tuple[str, list[dict[str, Any]], dict[str, Any], dict[str, list[Any]], bool]
        entries: list[Entry] = [("student alone", [{"name": "ce"}], {}, {}, False)]
        entries += [(*_method_entries(m, cfg.ce_weight), True) for m in cfg.methods]
        for label, methods, data_over, tune, needs_teacher in entries:
            def raw(ms: list[dict[str, Any]], seed: int, r_dir: Path) -> dict[str, Any]:
                return {**common, "data": {**common["data"], **data_over}, "student": {"name": pair.student},
                        "teacher": {"checkpoint": teachers[tag]} if needs_teacher else None,
                        "methods": ms, "train": cfg.student_train.model_dump(), "seed": seed, "out": str(r_dir)}
            command = "distill" if needs_teacher else "train"
            run_base = out / "runs" / tag / label.replace(" ", "_").replace("+", "-")
            if tune:  # the search: every candidate on the tune seeds, chosen on validation accuracy
                cands = _candidates(methods, tune)
                done = True
                for suffix, ms in cands:
                    for seed in cfg.tune_seeds:
                        r_dir = run_base / "tune" / suffix / f"s{seed}"
                        tuning.append((tag, label, suffix, seed, r_dir))
                        if _summary(r_dir) is None:
                            done = False
                            if not only_finished:
                                first.append((f"[{tag}] {label} tune {suffix} seed {seed}", raw(ms, seed, r_dir),
                                              command))
                chosen = _choose(tag, label, tuning) if done else None
                if chosen is None:
                    later.append((tag, label))
                    continue
                methods = dict(cands)[chosen]
                label = f"{label} (tuned {chosen})"
            for seed in cfg.seeds:
                r_dir = run_base / f"s{seed}"
                if tune and seed in cfg.tune_seeds:  # the search already ran this one
                    r_dir = run_base / "tune" / str(chosen) / f"s{seed}"
                grid.append((tag, label, seed, r_dir))
                if _summary(r_dir) is None and not only_finished:
                    pending.append((f"[{tag}] {label} seed {seed}", raw(methods, seed, r_dir), command))
    if first and not only_finished:  # the searches first; their choices run on the next invocation's grid
        _execute(first, jobs, progress, log)
        if later:
            return run_bench(cfg, out, progress, log, only_finished, jobs)
    for _line, r, _cmd in pending:
        load_config(base=r)  # a bad entry fails before any run starts
    _execute(pending, jobs, progress, log)
    records: list[dict[str, Any]] = []
    for tag, label, seed, r_dir in grid:
        if (s := _summary(r_dir)) is not None:
            records.append({"pair": tag, "method": label, "seed": seed, "acc": s["test"]["acc"],
                            "f1": s["test"]["f1"], "val_acc": s.get("best_val_acc"), "seconds": s["train_seconds"]})
    search = [{"pair": tag, "method": label, "candidate": c, "seed": seed, "val_acc": s.get("best_val_acc")}
              for tag, label, c, seed, r_dir in tuning if (s := _summary(r_dir)) is not None]
    teacher_epochs: dict[str, int | None] = {}
    for tag, t_ckpt in teachers.items():
        t_sum = Path(t_ckpt).parent / "summary.json"
        if t_sum.is_file():
            s = json.loads(t_sum.read_text())
            records.append({"pair": tag, "method": "teacher", "seed": 0, "acc": s["test"]["acc"],
                            "f1": s["test"]["f1"], "seconds": s["train_seconds"]})
        teacher_epochs[tag] = _trained_epochs(t_ckpt)
    write_tables(records, cfg, out, teacher_epochs, search)
    return records


def _choose(tag: str, label: str, tuning: list[tuple[str, str, str, int, Path]]) -> str | None:
    """The candidate of ``label``'s search with the best mean validation accuracy (None: unfinished)."""
    val: dict[str, list[float]] = {}
    for t, lab, cand, _seed, r_dir in tuning:
        if t == tag and lab == label:
            s = _summary(r_dir)
            if s is None:
                return None
            val.setdefault(cand, []).append(float(s["best_val_acc"]))
    return max(val, key=lambda c: statistics.mean(val[c])) if val else None


def _execute(pending: list[tuple[str, dict[str, Any], str]], jobs: int, progress: bool, log) -> None:
    if jobs == 1:
        for line, raw, command in pending:
            log(line)
            _run_one(raw, command, progress)
    elif pending:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_run_one, raw, command, False): line for line, raw, command in pending}
            for n, f in enumerate(as_completed(futures), 1):
                f.result()  # a failed run stops the grid with its error; finished runs are kept
                log(f"{futures[f]} done ({n}/{len(futures)})")


def _trained_epochs(checkpoint: str) -> int | None:
    """Epochs a teacher checkpoint was trained for: its run's summary.json, else its own metadata."""
    t_sum = Path(checkpoint).parent / "summary.json"
    try:
        if t_sum.is_file():
            return int(json.loads(t_sum.read_text())["epochs"])
        from kdlab.store.checkpoint import load_meta

        return int(load_meta(checkpoint)["epoch"])
    except (OSError, KeyError, ValueError, TypeError, KDLabError):
        return None


def _teacher_note(epochs: dict[str, int | None]) -> str:
    known = {t: e for t, e in epochs.items() if e is not None}
    if not known:
        return "teacher epochs unknown"
    if len(set(known.values())) == 1:
        return f"teacher {next(iter(known.values()))} epochs"
    return "teachers " + ", ".join(f"{t.replace('-', ' → ')} {e} epochs" for t, e in known.items())


def _ms(v: list[float]) -> str:
    v = [100 * x for x in v]
    return f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}"


def write_tables(records: list[dict[str, Any]], cfg: BenchConfig, out: Path,
                 teacher_epochs: dict[str, int | None] | None = None,
                 search: list[dict[str, Any]] | None = None) -> str:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["pair", "method", "seed", "acc", "f1", "val_acc", "seconds"])
        w.writeheader()
        w.writerows(records)
    pairs = list(dict.fromkeys(r["pair"] for r in records))
    methods = list(dict.fromkeys(r["method"] for r in records if r["method"] != "teacher"))
    rows = ["teacher", *methods]
    lines = ["| | " + " | ".join(f"{p.replace('-', ' → ')}" for p in pairs) + " |", "|---" * (len(pairs) + 1) + "|"]
    base = {p: [r["acc"] for r in records if r["pair"] == p and r["method"] == "student alone"] for p in pairs}
    for m in rows:
        cells = []
        for p in pairs:
            v = [r["acc"] for r in records if r["pair"] == p and r["method"] == m]
            if not v:
                cells.append("–")
                continue
            cell = _ms(v)
            if m not in ("teacher", "student alone") and base[p]:
                gain = statistics.mean(v) - statistics.mean(base[p])
                cell += f" ({100 * gain:+.2f}{', noise' if within_noise(gain, v, base[p]) else ''})"
            cells.append(cell)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    tuned = ""
    if search:
        with open(out / "search.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["pair", "method", "candidate", "seed", "val_acc"])
            w.writeheader()
            w.writerows(search)
        groups = list(dict.fromkeys((r["pair"], r["method"]) for r in search))
        tuned = ("\nWeight search (validation top-1 %, mean over tune seeds " + f"{cfg.tune_seeds}; the best "
                 "candidate runs on every seed above):\n\n| pair | method | candidates |\n|---|---|---|\n")
        for pair, m in groups:
            vals: dict[str, list[float]] = {}
            for r in search:
                if (r["pair"], r["method"]) == (pair, m):
                    vals.setdefault(r["candidate"], []).append(r["val_acc"])
            tuned += (f"| {pair.replace('-', ' → ')} | {m} | "
                      + ", ".join(f"{c}: {100 * statistics.mean(v):.2f}" for c, v in vals.items()) + " |\n")
    spread = (", noise: the gain is smaller than the larger of the two seed standard deviations"
              if len(cfg.seeds) > 1 else "")
    (out / "results.md").write_text(
        f"Top-1 test accuracy (%), mean ± std over seeds {cfg.seeds}; in brackets the change against the "
        f"student alone{spread}. Data: {cfg.data.name}" + (f" (subset {cfg.data.subset})" if cfg.data.subset else "")
        + f"; {_teacher_note(teacher_epochs or {})}, students {cfg.student_train.epochs} epochs.\n\n" + table + tuned
        + (f"\n{notes.read_text()}" if (notes := out / "notes.md").is_file() else ""))
    return table


def within_noise(gain: float, a: list[float], b: list[float]) -> bool:
    """Whether a difference of means is smaller than the seed spread (the larger standard deviation)."""
    if len(a) < 2 or len(b) < 2:
        return False
    return abs(gain) < max(statistics.stdev(a), statistics.stdev(b))
