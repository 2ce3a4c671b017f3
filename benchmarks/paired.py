"""Timing helpers shared by the benchmark scripts: paired, interleaved repeats in one process."""
from __future__ import annotations

import time
from typing import Any, Callable

Arm = Callable[[], tuple[float, float]]


def clock(f: Callable[[], Any]) -> tuple[float, float]:
    """(wall, CPU) seconds of ``f()``; CPU time is steadier when other work shares the cores."""
    w, c = time.perf_counter(), time.process_time()
    f()
    return time.perf_counter() - w, time.process_time() - c


def run_interleaved(arms: dict[str, Arm], repeats: int, tag: str) -> dict[str, dict[str, list[float]]]:
    """Run every arm ``repeats`` times, in forward order on even repeats and reverse order on odd
    ones, so that drifting load hits every arm alike; ``{"wall"|"cpu": {arm: [seconds per repeat]}}``."""
    t: dict[str, dict[str, list[float]]] = {c: {k: [] for k in arms} for c in ("wall", "cpu")}
    for rep in range(repeats):
        for k in (list(arms) if rep % 2 == 0 else list(reversed(arms))):
            w, c = arms[k]()
            t["wall"][k].append(w)
            t["cpu"][k].append(c)
        print(f"  {tag} rep {rep}: " + ", ".join(f"{k} {t['wall'][k][-1]:.3f}/{t['cpu'][k][-1]:.3f}" for k in arms),
              flush=True)
    return t
