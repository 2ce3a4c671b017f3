"""Helpers of the SIGKILL + --resume tests: a one-thread environment, finishing a kdlab process,
and a run's metrics and summary without the wall-clock fields that cannot match."""
import json
import os
import subprocess
from pathlib import Path

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def finish(p: "subprocess.Popen[str]") -> str:
    """Wait for ``p``; it must succeed. Returns its stderr."""
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, f"{p.args!r} failed ({p.returncode}):\n{out}\n{err}"
    return err


def metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in rows]


def summary(run: Path) -> dict:
    s = json.loads((run / "summary.json").read_text())
    s.pop("train_seconds")
    return s
