"""A run's report: one self-contained HTML file (every plot embedded as a base64 PNG data URI, no
scripts, no network) plus the same PNGs in ``<run>/plots/``.

    from kdlab.report import write_report
    write_report("runs/kd", baseline="runs/alone", teacher="runs/teacher/best")
"""
from __future__ import annotations

import base64
import html
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from torch import Tensor, nn

from kdlab.core import Batch
from kdlab.models.load import load_model
from kdlab.teachers.resolve import TeacherSpec, resolve_teacher

REPORT = "report.html"
PLOTS = "plots"


@dataclass
class Section:
    key: str
    title: str
    caption: str
    png: bytes


@dataclass
class ReportData:
    """Everything a report shows; the builders fill what they can and record why anything is missing."""

    name: str
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    baseline_history: list[dict[str, Any]] = field(default_factory=list)
    baseline_name: str = "student alone"
    config_text: str = ""
    classes: list[str] = field(default_factory=list)
    targets: Tensor | None = None
    student_logits: Tensor | None = None
    teacher_logits: Tensor | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    rows_source: str = ""
    notes: list[str] = field(default_factory=list)


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    p = Path(run_dir) / "metrics.jsonl"
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def _read_json(p: Path) -> Any:
    try:
        return json.loads(p.read_text()) if p.is_file() else None
    except json.JSONDecodeError:
        return None


@torch.no_grad()
def teacher_logits(teacher: Any, split: Any, batch_size: int = 512) -> Tensor:
    """Logits ``[N, C]`` of a Teacher (anything called on a Batch) over a Split."""
    module = _module_of(teacher)
    cpu = torch.device("cpu")
    device = next((q.device for q in module.parameters()), cpu) if module is not None else cpu
    outs = []
    for start in range(0, len(split), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(split)))
        # a teacher left on an accelerator gets its inputs there (a tensor or a dict of token tensors)
        b = Batch(split.gather(idx)).to(device)
        outs.append(teacher(b).logits.float().cpu())  # no index: caches answer train ids only
    return torch.cat(outs)


def read_config(run_dir: str | Path) -> dict[str, Any] | None:
    """A run's ``config.yaml`` as plain data (None when there is none)."""
    p = Path(run_dir) / "config.yaml"
    if not p.is_file():
        return None
    cfg = yaml.safe_load(p.read_text())
    if not isinstance(cfg, dict):
        raise ValueError(f"{p}: top level is not a mapping")
    return cfg


def data_of_config(cfg: dict[str, Any]) -> Any:
    """The splits a run's config names (its ``data:`` section; the split seed defaults to the run's seed)."""
    from kdlab.data import load_data

    d = cfg.get("data") or {}
    split_seed = d.get("split_seed")
    if split_seed is None:
        split_seed = cfg.get("seed") or 0
    return load_data(d["name"], root=d.get("root"), val_fraction=d.get("val_fraction", 0.1), split_seed=split_seed,
                     subset=d.get("subset"), augment=d.get("augment"), **(d.get("options") or {}))


def _module_of(teacher: Any) -> nn.Module | None:
    m = getattr(teacher, "module", teacher)
    return m if isinstance(m, nn.Module) else None


def _cost_row(name: str, kind: str, model: nn.Module | None, acc: float, shape: tuple[int, ...],
              latency: bool) -> dict[str, Any]:
    from kdlab.evaluate.cost import count_params, latency_ms, torch_threads

    row: dict[str, Any] = {"name": name, "kind": kind, "acc": acc, "params": float("nan"),
                           "latency_b1_ms": float("nan")}
    if model is None:
        return row
    row["params"] = count_params(model)
    if latency:
        try:
            with torch_threads(1):  # one thread: comparable across machines and load
                row["latency_b1_ms"] = latency_ms(model, shape, 1, repeats=20, warmup=5, max_seconds=2.0)
        except Exception:  # a module that cannot take a random input (e.g. token ids): no latency
            pass
    return row


def _accuracy(logits: Tensor, targets: Tensor | None) -> float:
    if targets is None:
        return float("nan")
    return float((logits.argmax(1) == targets).double().mean())


def collect(run_dir: str | Path, *, data: Any = None, student: nn.Module | None = None, teacher: Any = None,
            baseline: str | Path | None = None, compare: str | Path | None = None, measure: bool = True) -> ReportData:
    """Gather a run's numbers: history, test logits of the student (and teacher), cost rows."""
    run = Path(run_dir)
    rd = ReportData(name=run.resolve().name)
    rd.summary = _read_json(run / "summary.json") or {}
    rd.history = read_history(run)
    cfg: dict[str, Any] | None = None
    if (run / "config.yaml").is_file():
        rd.config_text = (run / "config.yaml").read_text()
        try:
            cfg = read_config(run)
        except Exception as e:
            rd.notes.append(f"config.yaml could not be read back: {e}")
    if baseline is not None:
        b = Path(baseline)
        rd.baseline_history = read_history(b)
        rd.baseline_name = f"student alone ({b.resolve().name})"
        if not rd.baseline_history:
            rd.notes.append(f"baseline {b}: no metrics.jsonl")
    # the student and its test predictions
    if data is None:
        try:
            if cfg is not None:
                data = data_of_config(cfg)
            else:
                from kdlab.data import load_data
                from kdlab.store.checkpoint import load_meta

                data = load_data(load_meta(run / "best")["data"])
        except Exception as e:
            rd.notes.append(f"test data unavailable ({e}): confusion matrix, calibration and agreement omitted")
    if student is None and (run / "best.safetensors").is_file():
        try:
            student = load_model(run / "best")[0]
        except Exception as e:
            rd.notes.append(f"best checkpoint unreadable: {e}")
    if student is not None and any(q.device.type != "cpu" for q in student.parameters()):
        import copy

        student = copy.deepcopy(student).cpu()  # the report evaluates and times on CPU
    if data is not None and student is not None:
        from kdlab.evaluate.metrics import predict

        rd.classes = list(data.classes)
        rd.targets = data.test.y
        rd.student_logits = predict(student, data.test)
    # the teacher
    if teacher is None and cfg is not None and cfg.get("teacher") and data is not None:
        try:
            teacher = resolve_teacher(TeacherSpec.model_validate(cfg["teacher"]), data)
        except Exception as e:
            rd.notes.append(f"the run's teacher could not be loaded ({e}): agreement omitted")
    elif data is not None and teacher is not None:
        try:
            teacher = resolve_teacher(teacher, data)
        except Exception as e:
            rd.notes.append(f"teacher {teacher} could not be loaded ({e}): agreement omitted")
            teacher = None
    if teacher is not None and data is not None and rd.student_logits is not None:
        try:
            rd.teacher_logits = teacher_logits(teacher, data.test)
        except Exception as e:
            rd.notes.append(f"the teacher failed on the test split ({e}): agreement omitted")
    elif rd.student_logits is not None and teacher is None:
        rd.notes.append("no teacher (a run trained from labels alone): teacher–student agreement omitted")
    # cost rows: a compare.json written by `kdlab compare` / `kdlab demo`, else measured here
    cmp_path = Path(compare) if compare is not None else next(
        (p for p in (run / "compare.json", run.parent / "compare.json") if p.is_file()), None)
    rows = _read_json(cmp_path) if cmp_path is not None else None
    if isinstance(rows, list) and rows:
        rd.rows, rd.rows_source = rows, str(cmp_path)
    elif measure and data is not None and rd.student_logits is not None:
        shape = tuple(data.input_shape)
        if rd.teacher_logits is not None:
            rd.rows.append(_cost_row("teacher", "teacher", _module_of(teacher),
                                     _accuracy(rd.teacher_logits, rd.targets), shape, True))
        if baseline is not None and (Path(baseline) / "best.safetensors").is_file():
            try:
                from kdlab.evaluate.metrics import predict

                bm = load_model(Path(baseline) / "best")[0]
                rd.rows.append(_cost_row("student alone", "baseline", bm, _accuracy(predict(bm, data.test), rd.targets),
                                         shape, True))
            except Exception as e:
                rd.notes.append(f"baseline checkpoint unusable ({e})")
        label = "distilled" if rd.teacher_logits is not None or (rd.summary.get("command") == "distill") else "this run"
        rd.rows.append(_cost_row(label, "distilled", student, _accuracy(rd.student_logits, rd.targets), shape, True))
        rd.rows_source = "measured while writing this report (CPU, one thread, batch 1, median)"
    return rd


def figures(rd: ReportData) -> list[Section]:
    from kdlab.report import plots

    out: list[Section] = []

    def add(key: str, title: str, caption: str, make: Callable[[], Any]) -> None:
        try:
            out.append(Section(key, title, caption, plots.png(make())))
        except Exception as e:  # one broken plot never costs the others
            rd.notes.append(f"{title}: not drawn ({type(e).__name__}: {e})")

    if rd.history:
        add("learning_curves", "Learning curves",
            "Validation accuracy per epoch (solid) and running training accuracy (dashed)"
            + (f", against {rd.baseline_name} trained with the same budget." if rd.baseline_history else "."),
            lambda: plots.learning_curves(rd.history, rd.baseline_history or None, label=rd.name,
                                          baseline_label=rd.baseline_name))
        add("loss_terms", "Loss terms", "Each weighted training term, averaged over the epoch, and their sum (loss).",
            lambda: plots.loss_terms(rd.history))
    else:
        rd.notes.append("no metrics.jsonl: learning curves and loss terms omitted")
    s_logits, t_logits, targets = rd.student_logits, rd.teacher_logits, rd.targets
    if s_logits is not None and targets is not None:
        add("confusion", "Confusion matrix", "Test split, rows normalised by the true class; cells give counts.",
            lambda: plots.confusion(s_logits, targets, rd.classes))
        if t_logits is not None:
            add("agreement", "Teacher–student agreement",
                "How often the student's top-1 matches the teacher's on the test split, per true class, and "
                "which of the two is right.", lambda: plots.agreement(s_logits, t_logits, targets, rd.classes))
        add("reliability", "Calibration",
            "Reliability diagram: accuracy within each confidence bin (15 equal-width bins) against the "
            "diagonal; ECE is the sample-weighted mean gap.", lambda: plots.reliability(s_logits, targets))
    # figures a scheme drew itself (summary.extra.figures: [{key, title, caption, path}]), e.g. a data-free run's
    for f in (rd.summary.get("extra") or {}).get("figures") or []:
        try:
            out.append(Section(str(f["key"]), str(f["title"]), str(f["caption"]), Path(f["path"]).read_bytes()))
        except (OSError, KeyError, TypeError) as e:
            rd.notes.append(f"{f.get('title', 'a figure') if isinstance(f, dict) else 'a figure'}: not shown ({e})")
    if len([r for r in rd.rows if isinstance(r.get("params"), (int, float)) and r["params"] == r["params"]]) >= 1:
        add("tradeoff", "Accuracy vs cost", f"Test top-1 against parameters and CPU latency; source: {rd.rows_source}.",
            lambda: plots.tradeoff(rd.rows))
    return out


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;
color:#222}
h1{font-size:1.6em;margin-bottom:.2em}
h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em}
td,th{border:1px solid #ddd;padding:.3em .6em;text-align:right}
th{background:#f5f5f5} td:first-child,th:first-child{text-align:left}
figure{margin:1em 0} figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9em} pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em}
.muted{color:#777;font-size:.9em}
"""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return "–"
        return f"{v:.4f}" if abs(v) < 10 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return html.escape(str(v))


def _table(rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> str:
    def present(v: Any) -> bool:
        return v is not None and v != "" and not (isinstance(v, float) and not math.isfinite(v))

    cols = [(k, t) for k, t in cols if any(present(r.get(k)) for r in rows)]  # drop empty columns
    head = "".join(f"<th>{html.escape(t)}</th>" for _, t in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(k, ''))}</td>" for k, _ in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(rd: ReportData, sections: list[Section]) -> str:
    s = rd.summary
    test = s.get("test") or {}
    if not test and rd.student_logits is not None and rd.targets is not None:
        from kdlab.evaluate.metrics import classification_metrics

        test = classification_metrics(rd.student_logits, rd.targets, len(rd.classes) or None)
    parts = [f"<h1>kdlab report: {html.escape(rd.name)}</h1>",
             f"<p class='muted'>written {time.strftime('%Y-%m-%d %H:%M:%S')}"
             + (f" · {html.escape(str(s['command']))}" if s.get("command") else "") + "</p>", "<h2>Summary</h2>"]
    summary_rows = [{"k": k, "v": v} for k, v in (
        ("test top-1", test.get("acc")), ("test macro-F1", test.get("f1")), ("test NLL", test.get("nll")),
        ("test ECE", test.get("ece")), ("best val top-1", s.get("best_val_acc")), ("best epoch", s.get("best_epoch")),
        ("epochs", s.get("epochs") or (len(rd.history) or None)), ("parameters", s.get("params")),
        ("training seconds", s.get("train_seconds"))) if v is not None]
    if rd.teacher_logits is not None and rd.student_logits is not None and rd.targets is not None:
        from kdlab.report.plots import agreement_stats

        st = agreement_stats(rd.student_logits, rd.teacher_logits, rd.targets)
        summary_rows += [{"k": "teacher test top-1", "v": _accuracy(rd.teacher_logits, rd.targets)},
                         {"k": "teacher–student top-1 agreement", "v": st["agreement"]},
                         {"k": "KL(teacher ‖ student), T = 1", "v": st["kl_teacher_student"]}]
    parts.append(_table(summary_rows, [("k", "metric"), ("v", "value")]))
    for sec in sections:
        uri = "data:image/png;base64," + base64.b64encode(sec.png).decode("ascii")
        title = html.escape(sec.title)
        parts.append(f"<h2 id='{sec.key}'>{title}</h2><figure><img src='{uri}' alt='{title}'>"
                     f"<figcaption>{html.escape(sec.caption)}</figcaption></figure>")
    if rd.rows:
        parts.append("<h2>Models compared</h2>")
        parts.append(_table(rd.rows, [("name", "model"), ("acc", "test top-1"), ("params", "params"),
                                      ("latency_b1_ms", "ms @ batch 1"), ("latency_b256_ms", "ms @ batch 256"),
                                      ("size_kb", "size KB"), ("speedup", "speed-up @ batch 256")]))
        parts.append(f"<p class='muted'>source: {html.escape(rd.rows_source)}</p>")
    if rd.notes:
        parts.append("<h2>Not shown</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in rd.notes) + "</ul>")
    if rd.config_text:
        parts.append(f"<h2>Configuration</h2><pre>{html.escape(rd.config_text)}</pre>")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>kdlab report: {html.escape(rd.name)}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def write_report(run_dir: str | Path, *, data: Any = None, student: nn.Module | None = None, teacher: Any = None,
                 baseline: str | Path | None = None, compare: str | Path | None = None, measure: bool = True,
                 out: str | Path | None = None) -> Path:
    """Write ``<run>/report.html`` and ``<run>/plots/*.png``; return the HTML path.

    data/student/teacher: pass what is already in memory (as a finished run does); otherwise
    they are rebuilt from the run's ``config.yaml`` and ``best`` checkpoint. baseline: a run
    directory of the student trained alone. compare: a ``compare.json`` (default: one in the run
    directory or its parent). measure: time the models on CPU when no compare.json is found.
    """
    from kdlab.store.checkpoint import atomic_write, atomic_write_text

    run = Path(run_dir)
    if not run.is_dir():
        from kdlab.errors import ConfigError

        raise ConfigError(f"run directory {run} not found")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rd = collect(run, data=data, student=student, teacher=teacher, baseline=baseline, compare=compare,
                     measure=measure)
        sections = figures(rd)
    dest = Path(out) if out is not None else run / REPORT
    plots_dir = dest.parent / PLOTS
    plots_dir.mkdir(parents=True, exist_ok=True)
    for sec in sections:
        atomic_write(plots_dir / f"{sec.key}.png", lambda p, b=sec.png: Path(p).write_bytes(b))
        os.chmod(plots_dir / f"{sec.key}.png", 0o644)
    atomic_write_text(dest, render_html(rd, sections))
    os.chmod(dest, 0o644)  # a page to share, not a secret
    return dest
