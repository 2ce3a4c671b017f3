from __future__ import annotations

import typer

from kdlab.cli.main import app


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(ctx: typer.Context,
          config: str = typer.Argument(..., help="bench YAML (see configs/bench/)"),
          out: str = typer.Option("runs/bench", help="directory for runs and results.md/.csv"),
          quiet: bool = typer.Option(True, help="no progress bars"),
          only_finished: bool = typer.Option(False, help="only tabulate the runs already finished"),
          jobs: int = typer.Option(1, help="runs in parallel processes (each gets cores / jobs threads unless "
                                           "threads= is set)")) -> None:
    """Run a grid of methods × teacher→student pairs × seeds and write results.md / results.csv.

    Finished runs are reused, so an interrupted grid continues where it stopped.

    Example:  kdlab bench configs/bench/fmnist.yaml --out benchmarks/zoo --jobs 2 seeds=[0]
    """
    from kdlab.bench import load_bench, run_bench

    cfg = load_bench(config, list(ctx.args))
    run_bench(cfg, out, progress=not quiet, log=typer.echo, only_finished=only_finished, jobs=jobs)
    typer.echo((__import__("pathlib").Path(out) / "results.md").read_text())
