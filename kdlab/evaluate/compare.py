"""The comparison table: teacher, student alone, distilled student(s)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from kdlab.data import DataSplits, Split
from kdlab.evaluate.cost import (
    architecture_key,
    count_flops,
    count_params,
    interleaved_latency_stats,
    size_on_disk_bytes,
)
from kdlab.evaluate.metrics import classification_metrics, predict


@dataclass
class Row:
    name: str
    acc: float
    precision: float
    recall: float
    f1: float
    params: int
    mflops: float
    latency_b1_ms: float  # median of interleaved timings; one measurement per architecture
    latency_b256_ms: float
    size_kb: float
    speedup: float = 1.0  # reference (teacher) latency / this latency, both at batch 256
    latency_b1_spread_ms: float = float("nan")  # half the interquartile range of those timings
    latency_b256_spread_ms: float = float("nan")

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def compare(models: dict[str, nn.Module], data: DataSplits, reference: str | None = None, latency: bool = True,
            splits: dict[str, Split] | None = None) -> list[Row]:
    """Measure every model on the test split (``splits[name]`` overrides it, e.g. a split with the
    model's own normalisation). Latency is timed round-robin across the models; speed-up is
    relative to ``reference`` (default: the first, the teacher) at batch 256."""
    shape = data.input_shape
    rows = []
    for name, model in models.items():
        s = (splits or {}).get(name) or data.test
        assert s.y is not None, f"the split measuring {name!r} has no labels"
        m = classification_metrics(predict(model, s), s.y, data.num_classes)
        rows.append(Row(name, m["acc"], m["precision"], m["recall"], m["f1"], count_params(model),
                        count_flops(model, shape) / 1e6, float("nan"), float("nan"), size_on_disk_bytes(model) / 1024))
    if latency:
        # two copies of one architecture cost the same: each architecture is timed once (round-robin
        # with the others) and its numbers shown on every row, so timing noise is not shown as a result
        keys = [architecture_key(m) for m in models.values()]
        firsts = list(dict.fromkeys(keys))
        reps = [list(models.values())[keys.index(k)] for k in firsts]
        b1 = dict(zip(firsts, interleaved_latency_stats(reps, shape, 1, rounds=30)))
        b256 = dict(zip(firsts, interleaved_latency_stats(reps, shape, 256, rounds=9)))
        for r, k in zip(rows, keys):
            (r.latency_b1_ms, r.latency_b1_spread_ms), (r.latency_b256_ms, r.latency_b256_spread_ms) = b1[k], b256[k]
    ref = next((r for r in rows if r.name == reference), rows[0])
    for r in rows:
        r.speedup = ref.latency_b256_ms / r.latency_b256_ms if latency and r.latency_b256_ms > 0 else float("nan")
    return rows


HEADERS = ["model", "top-1 %", "precision %", "recall %", "F1 %", "params", "MFLOPs", "ms @ batch 1",
           "ms @ batch 256", "size KB", "speed-up @ batch 256"]
NOTE = ("Latency: CPU, median ± half the interquartile range of interleaved timings, measured once per "
        "architecture; speed-up = the first row's latency / this row's, both at batch 256.")


def _cells(r: Row) -> list[str]:
    return [r.name, f"{100 * r.acc:.2f}", f"{100 * r.precision:.2f}", f"{100 * r.recall:.2f}", f"{100 * r.f1:.2f}",
            f"{r.params:,}", f"{r.mflops:.2f}", f"{r.latency_b1_ms:.3f} ± {r.latency_b1_spread_ms:.3f}",
            f"{r.latency_b256_ms:.2f} ± {r.latency_b256_spread_ms:.2f}", f"{r.size_kb:.1f}", f"{r.speedup:.1f}×"]


def to_markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n\n" + NOTE + "\n"


def print_table(rows: list[Row], title: str = "") -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title or None)
    for i, h in enumerate(HEADERS):
        t.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*_cells(r))
    console = Console(width=max(Console().width, 170))
    console.print(t)
    console.print(NOTE)


def save_table(rows: list[Row], out: str | Path) -> None:
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(to_markdown(rows))
    (out / "compare.json").write_text(json.dumps([r.as_dict() for r in rows], indent=2))
