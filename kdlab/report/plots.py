"""The report's figures, drawn with matplotlib's object API on the Agg canvas (no display, no pyplot
global state). Each function returns a :class:`matplotlib.figure.Figure`; :func:`png` renders it."""
from __future__ import annotations

import io
import math
from typing import Any, Sequence

import torch
from torch import Tensor

from kdlab.evaluate.metrics import confusion_matrix, expected_calibration_error

DPI = 110
COLORS = {"distilled": "#1f77b4", "baseline": "#ff7f0e", "teacher": "#2ca02c"}


def _figure(w: float = 6.4, h: float = 4.0):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=DPI, layout="constrained")


def png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pts = [(int(r.get("epoch", i + 1)), float(r[key])) for i, r in enumerate(history)
           if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


def learning_curves(history: Sequence[dict[str, Any]], baseline: Sequence[dict[str, Any]] | None = None,
                    label: str = "this run", baseline_label: str = "student alone"):
    """Validation (solid) and running train (dashed) accuracy per epoch, against a baseline run."""
    fig = _figure()
    ax = fig.subplots()
    for hist, name, color in ((history, label, COLORS["distilled"]), (baseline, baseline_label, COLORS["baseline"])):
        if not hist:
            continue
        x, y = _series(hist, "val_acc")
        ax.plot(x, [100 * v for v in y], "-o", ms=3, color=color, label=f"{name}: val")
        x, y = _series(hist, "train_acc")
        if x:
            ax.plot(x, [100 * v for v in y], "--", color=color, alpha=0.6, label=f"{name}: train (running)")
    _integer_epochs(ax)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("Learning curves" + (f": {label} vs {baseline_label}" if baseline else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def loss_terms(history: Sequence[dict[str, Any]]):
    """Every weighted training term (``train_<name>``) and their sum, per epoch."""
    keys = sorted({k for r in history for k in r if k.startswith("train_") and k != "train_acc"},
                  key=lambda k: (k == "train_loss", k))
    fig = _figure()
    ax = fig.subplots()
    positive = True
    for k in keys:
        x, y = _series(history, k)
        if not x:
            continue
        positive &= all(v > 0 for v in y)
        ax.plot(x, y, "-o" if k != "train_loss" else "-", ms=3, lw=2.5 if k == "train_loss" else 1.5,
                color="black" if k == "train_loss" else None, label=k.removeprefix("train_"))
    if positive and keys:
        ax.set_yscale("log")
    _integer_epochs(ax)
    ax.set_ylabel("weighted loss (epoch mean)")
    ax.set_title("Loss terms over training")
    ax.grid(alpha=0.3, which="both")
    if keys:
        ax.legend(fontsize=8)
    return fig


def confusion(logits: Tensor, targets: Tensor, classes: Sequence[str], title: str = "Confusion matrix (test)"):
    """Row-normalised confusion matrix; counts written in the cells for up to 20 classes."""
    c = len(classes)
    cm = confusion_matrix(logits, targets, c).double()
    rate = cm / cm.sum(1, keepdim=True).clamp_min(1)
    size = min(9.0, 3.0 + 0.35 * c)
    fig = _figure(size + 1.2, size)
    ax = fig.subplots()
    im = ax.imshow(rate.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    if c <= 20:
        names = [str(n)[:12] for n in classes]
        ax.set_xticks(range(c), names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(c), names, fontsize=8)
        for i in range(c):
            for j in range(c):
                if cm[i, j] > 0:
                    ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if rate[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}: accuracy {100 * float(cm.diag().sum() / cm.sum().clamp_min(1)):.2f}%")
    return fig


def agreement_stats(student: Tensor, teacher: Tensor, targets: Tensor) -> dict[str, float]:
    ps, pt = student.argmax(1), teacher.argmax(1)
    kl = torch.nn.functional.kl_div(student.log_softmax(1), teacher.log_softmax(1), log_target=True,
                                    reduction="batchmean")
    s_ok, t_ok = ps == targets, pt == targets
    return {"agreement": float((ps == pt).double().mean()), "kl_teacher_student": float(kl),
            "both_right": float((s_ok & t_ok).double().mean()), "teacher_only": float((t_ok & ~s_ok).double().mean()),
            "student_only": float((s_ok & ~t_ok).double().mean()), "both_wrong": float((~s_ok & ~t_ok).double().mean())}


def agreement(student: Tensor, teacher: Tensor, targets: Tensor, classes: Sequence[str]):
    """Top-1 agreement between teacher and student, per true class, and who is right when."""
    st = agreement_stats(student, teacher, targets)
    c = len(classes)
    same = (student.argmax(1) == teacher.argmax(1)).double()
    per = [float(same[targets == k].mean()) if (targets == k).any() else float("nan") for k in range(c)]
    fig = _figure(9.0, 3.8)
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[2.2, 1])
    ax1.bar(range(c), [100 * v for v in per], color=COLORS["distilled"])
    ax1.axhline(100 * st["agreement"], color="black", ls="--", lw=1, label=f"overall {100 * st['agreement']:.1f}%")
    if c <= 20:
        ax1.set_xticks(range(c), [str(n)[:10] for n in classes], rotation=60, ha="right", fontsize=8)
    ax1.set_ylim(0, 105)
    ax1.set_ylabel("same top-1 as the teacher (%)")
    ax1.set_xlabel("true class")
    ax1.legend(fontsize=8, loc="lower right")
    ax1.set_title(f"Teacher–student agreement (KL(T‖S) = {st['kl_teacher_student']:.3f})")
    names = ["both right", "teacher only", "student only", "both wrong"]
    vals = [st["both_right"], st["teacher_only"], st["student_only"], st["both_wrong"]]
    colors = ["#17becf", COLORS["teacher"], COLORS["distilled"], "#7f7f7f"]  # both, teacher, student, neither
    ax2.barh(names[::-1], [100 * v for v in vals[::-1]], color=colors[::-1])
    for i, v in enumerate(vals[::-1]):
        ax2.text(100 * v + 1, i, f"{100 * v:.1f}%", va="center", fontsize=8)
    ax2.set_xlim(0, 115)
    ax2.set_xlabel("% of test samples")
    ax2.set_title("Who is right")
    return fig


def reliability(logits: Tensor, targets: Tensor, bins: int = 15, title: str = "Reliability diagram (test)"):
    """Accuracy per confidence bin against the diagonal, with the confidence histogram below."""
    probs = logits.float().softmax(1)
    conf, pred = probs.max(1)
    correct = (pred == targets).double()
    edges = torch.linspace(0, 1, bins + 1)
    centers, accs, counts, gaps = [], [], [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        centers.append(float((lo + hi) / 2))
        counts.append(int(m.sum()))
        accs.append(float(correct[m].mean()) if m.any() else 0.0)
        gaps.append(float(conf[m].double().mean()) if m.any() else 0.0)
    ece = expected_calibration_error(logits.float(), targets, bins)
    fig = _figure(5.0, 5.6)
    ax, axh = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    w = 1 / bins
    ax.bar(centers, accs, width=w, edgecolor="black", color=COLORS["distilled"], label="accuracy")
    ax.bar(centers, [g - a if c else 0 for g, a, c in zip(gaps, accs, counts)], bottom=accs, width=w,
           fill=False, hatch="//", edgecolor="#d62728", lw=0.8, label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}: ECE {ece:.4f}")
    ax.legend(fontsize=8, loc="upper left")
    axh.bar(centers, counts, width=w, color="#7f7f7f", edgecolor="black")
    axh.set_yscale("log" if max(counts) > 50 * max(1, sorted(counts)[len(counts) // 2]) else "linear")
    axh.set_xlabel("confidence (max softmax)")
    axh.set_ylabel("samples")
    return fig


def tradeoff(rows: Sequence[dict[str, Any]]):
    """Accuracy against parameters and against CPU latency (batch 1), one point per model."""
    from matplotlib.ticker import NullFormatter

    fig = _figure(9.0, 3.8)
    ax1, ax2 = fig.subplots(1, 2, sharey=True)
    for ax, key, xlabel in ((ax1, "params", "parameters"), (ax2, "latency_b1_ms", "CPU latency, batch 1 (ms)")):
        xs = []
        for r in rows:
            x, acc = r.get(key), r.get("acc")
            if not isinstance(x, (int, float)) or not math.isfinite(x) or x <= 0 or acc is None:
                continue
            xs.append(x)
            kind = r.get("kind") or _kind(r["name"])
            ax.scatter([x], [100 * acc], s=60, color=COLORS.get(kind, "#9467bd"), edgecolor="black", zorder=3)
            ax.annotate(r["name"], (x, 100 * acc), textcoords="offset points", xytext=(6, 4), fontsize=8)
        if xs and max(xs) / min(xs) >= 30:  # log scale only when the models differ by orders of magnitude
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3, which="both")
        ax.margins(x=0.25, y=0.15)
    ax1.set_ylabel("test top-1 (%)")
    ax1.set_title("Accuracy vs size")
    ax2.set_title("Accuracy vs CPU latency")
    return fig


def _integer_epochs(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")


def _kind(name: str) -> str:
    n = name.lower()
    if "teacher" in n:
        return "teacher"
    if "alone" in n or "baseline" in n:
        return "baseline"
    return "distilled"
