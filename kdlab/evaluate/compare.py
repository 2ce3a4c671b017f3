"""The comparison table: teacher, student alone, distilled student(s)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from kdlab.data import DataSplits, Split
from kdlab.evaluate.cost import count_flops, count_params, interleaved_latency_ms, size_on_disk_bytes
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
    latency_b1_ms: float
    latency_b256_ms: float
    size_kb: float
    speedup: float = 1.0  # teacher latency (batch 256) / this latency

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
        mods = list(models.values())
        for r, b1, b256 in zip(rows, interleaved_latency_ms(mods, shape, 1, rounds=30),
                               interleaved_latency_ms(mods, shape, 256, rounds=9)):
            r.latency_b1_ms, r.latency_b256_ms = b1, b256
    ref = next((r for r in rows if r.name == reference), rows[0])
    for r in rows:
        r.speedup = ref.latency_b256_ms / r.latency_b256_ms if latency and r.latency_b256_ms > 0 else float("nan")
    return rows


HEADERS = ["model", "top-1", "precision", "recall", "F1", "params", "MFLOPs", "ms @1", "ms @256", "size KB", "speed-up"]


def _cells(r: Row) -> list[str]:
    return [r.name, f"{100 * r.acc:.2f}", f"{100 * r.precision:.2f}", f"{100 * r.recall:.2f}", f"{100 * r.f1:.2f}",
            f"{r.params:,}", f"{r.mflops:.2f}", f"{r.latency_b1_ms:.3f}", f"{r.latency_b256_ms:.2f}",
            f"{r.size_kb:.1f}", f"{r.speedup:.1f}×"]


def to_markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def print_table(rows: list[Row], title: str = "") -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title or None)
    for i, h in enumerate(HEADERS):
        t.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*_cells(r))
    Console(width=max(Console().width, 150)).print(t)


def save_table(rows: list[Row], out: str | Path) -> None:
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(to_markdown(rows))
    (out / "compare.json").write_text(json.dumps([r.as_dict() for r in rows], indent=2))
