from __future__ import annotations

from typing import Optional

import typer

from kdlab.cli.main import app


@app.command()
def report(run_dir: str = typer.Argument(..., help="a run directory (holds metrics.jsonl, best.safetensors, "
                                                   "config.yaml)"),
           baseline: Optional[str] = typer.Option(None, help="run directory of the same student trained alone"),
           teacher: Optional[str] = typer.Option(None, help="teacher: a kdlab checkpoint, .onnx or TorchScript file "
                                                             "(default: the run's config)"),
           compare: Optional[str] = typer.Option(None, help="a compare.json (default: one in RUN_DIR or its parent)"),
           no_measure: bool = typer.Option(False, "--no-measure", help="do not time models on CPU"),
           out: Optional[str] = typer.Option(None, help="HTML path (default RUN_DIR/report.html)")) -> None:
    """Rebuild a run's HTML report: learning curves (against --baseline), loss terms, confusion
    matrix, teacher–student agreement, reliability diagram with ECE, accuracy vs parameters and
    CPU latency. The page is self-contained (images embedded); the PNGs go to plots/ beside it.

    Examples:

      kdlab report runs/kd

      kdlab report runs/kd --baseline runs/alone --teacher runs/teacher/best
    """
    from pathlib import Path

    from kdlab.errors import ConfigError
    from kdlab.report import write_report

    if baseline is not None and not (Path(baseline) / "metrics.jsonl").is_file():
        raise ConfigError(f"--baseline {baseline} is not a run directory (no metrics.jsonl)")
    if compare is not None and not Path(compare).is_file():
        raise ConfigError(f"--compare {compare} not found")
    path = write_report(run_dir, baseline=baseline, teacher=teacher, compare=compare, measure=not no_measure, out=out)
    typer.echo(f"report: {path}")
