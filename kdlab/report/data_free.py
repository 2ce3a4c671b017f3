"""The figures of a data-free run (drawn by the data-free scheme, shown in its report): synthesised
samples per class, the class histogram the teacher assigns to them, their diversity, and test
accuracy against compute. Numbers first (pure functions, tested), figures second."""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor

from kdlab.report.plots import _figure


def mean_pairwise_distance(x: Tensor, max_samples: int = 512) -> float:
    """Mean l2 distance over all pairs ``i < j`` of (the first ``max_samples``) rows of ``x`` ``[N, ...]``:
    near 0 when a synthesizer collapses onto one input."""
    f = x[:max_samples].flatten(1).double()
    n = f.shape[0]
    if n < 2:
        return 0.0
    d = torch.cdist(f, f)
    return float(d.sum() / (n * (n - 1)))


def class_histogram(logits: Tensor, num_classes: int) -> list[int]:
    """How many samples the teacher assigns to each class (its argmax). ``[N, C]`` → ``C`` counts."""
    return torch.bincount(logits.argmax(1), minlength=num_classes).tolist()


def sample_grid(x: Tensor, labels: Tensor, classes: Sequence[str], per_class: int = 8, mean: Tensor | None = None,
                std: Tensor | None = None) -> Any:
    """Up to ``per_class`` samples of each class (rows) as the teacher labels them; images ``[N, C, H, W]``
    (normalised; shown back in pixel space when ``mean``/``std`` are given)."""
    C = len(classes)
    fig = _figure(1.0 + 0.9 * per_class, 0.9 * C + 0.6)
    axes = fig.subplots(C, per_class, squeeze=False)
    img = x.detach().float()
    if mean is not None and std is not None:
        img = img * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)
    img = img.clamp(0, 1) if mean is not None else (img - img.min()) / (img.max() - img.min() + 1e-8)
    for c in range(C):
        rows = torch.nonzero(labels == c).flatten()[:per_class]
        for j in range(per_class):
            ax = axes[c][j]
            ax.set_xticks([]), ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j < len(rows):
                im = img[rows[j]]
                if im.shape[0] == 1:
                    ax.imshow(im[0].numpy(), cmap="gray", vmin=0, vmax=1)
                else:
                    ax.imshow(im[:3].permute(1, 2, 0).numpy())
            if j == 0:
                ax.set_ylabel(str(classes[c]), rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("Synthesised samples by the teacher's class (empty: the teacher gave none)", fontsize=9)
    return fig


def histogram(counts: Sequence[int], classes: Sequence[str]) -> Any:
    fig = _figure(6.4, 3.2)
    ax = fig.add_subplot()
    ax.bar(range(len(counts)), counts, color="#1f77b4")
    ax.set_xticks(range(len(counts)), [str(c) for c in classes], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("samples")
    ax.axhline(sum(counts) / max(len(counts), 1), color="#888", lw=1, ls="--", label="balanced")
    ax.legend(fontsize=8)
    ax.set_title("Classes the teacher assigns to synthesised samples", fontsize=10)
    return fig


def diversity(values: dict[str, float]) -> Any:
    """Mean pairwise distance of each named set of inputs (synthetic, and real test inputs for scale)."""
    fig = _figure(5.0, 2.8)
    ax = fig.add_subplot()
    names = list(values)
    ax.barh(names, [values[n] for n in names], color=["#1f77b4", "#2ca02c", "#ff7f0e"][: len(names)])
    ax.set_xlabel("mean pairwise l2 distance (normalised inputs)")
    ax.set_title("Diversity (near 0: mode collapse)", fontsize=10)
    return fig


def accuracy_vs_compute(history: Sequence[dict[str, Any]]) -> Any:
    """Test top-1 after each epoch against cumulative CPU minutes of training (``epoch_cpu_seconds``)."""
    pts, total = [], 0.0
    for r in history:
        total += float(r.get("epoch_cpu_seconds", r.get("epoch_seconds", 0.0)))
        if isinstance(r.get("test_acc"), (int, float)) and math.isfinite(r["test_acc"]):
            pts.append((total / 60.0, 100 * float(r["test_acc"])))
    fig = _figure(5.6, 3.4)
    ax = fig.add_subplot()
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color="#1f77b4")
    ax.set_xlabel("CPU minutes of training (synthesis included)")
    ax.set_ylabel("real test top-1 (%)")
    ax.set_title("Test accuracy against compute", fontsize=10)
    ax.grid(alpha=0.3)
    return fig
