"""``kdlab search``: student architecture search under a deployment budget (see kdlab.search)."""
from __future__ import annotations

from typing import Optional

import typer

from kdlab.cli.common import EXTRA
from kdlab.cli.main import app


@app.command(context_settings=EXTRA)
def search(ctx: typer.Context,
           config: Optional[str] = typer.Argument(None, help="YAML run config with a search: section (optional)"),
           teacher: Optional[str] = typer.Option(None, help="teacher checkpoint (a run's best/last)"),
           data: Optional[str] = typer.Option(None, help="dataset name"),
           latency_ms: Optional[float] = typer.Option(None, help="latency budget in ms (search.budget.latency_ms)"),
           params: Optional[int] = typer.Option(None, help="parameter budget (search.budget.params)"),
           mflops: Optional[float] = typer.Option(None, help="MFLOPs budget (search.budget.mflops)"),
           out: Optional[str] = typer.Option(None, help="search directory (search.dir)")) -> None:
    """Search students across families and their width/depth knobs under a budget of parameters,
    MFLOPs or latency measured in ONNX Runtime; short distillations, multi-fidelity, Pareto front.

    Writes <dir>/report.md (front table and plot) and <dir>/student.yaml (run it with kdlab distill).

    Examples:

      kdlab search --teacher runs/t/best --data digits --latency-ms 0.5

      kdlab search configs/search_fmnist.yaml search.budget.latency_ms=1.0 search.rungs=[2,6]
    """
    from kdlab.cli.common import _yaml, split_args
    from kdlab.search import load_search
    from kdlab.search import search as run_search

    path, overrides = split_args(config, ctx.args)
    flags = {"teacher.checkpoint": teacher, "data.name": data, "search.budget.latency_ms": latency_ms,
             "search.budget.params": params, "search.budget.mflops": mflops, "search.dir": out}
    flag_overrides = [f"{k}={_yaml(v)}" for k, v in flags.items() if v is not None]
    cfg, spec = load_search(path, flag_overrides + overrides)
    run_search(cfg, spec, say=typer.echo)
