from __future__ import annotations

import typer

from kdlab.cli.main import app


@app.command()
def methods() -> None:
    """List every distillation method with its family, paper and hyperparameters."""
    from rich.console import Console
    from rich.table import Table

    from kdlab.methods import METHODS, hyperparameters, list_methods, paper

    t = Table()
    for h in ("method", "family", "paper", "hyperparameters (defaults)"):
        t.add_column(h, overflow="fold")
    for name in list_methods():
        hp = ", ".join(f"{k}={v}" for k, v in hyperparameters(name).items())
        t.add_row(name, METHODS.get(name).family, paper(name), hp)
    Console(width=200).print(t)


@app.command()
def models() -> None:
    """List registered models with parameter counts for 10 classes at 3×32×32."""
    from kdlab.evaluate.cost import count_params
    from kdlab.models import create_model, list_models

    for name in list_models():
        typer.echo(f"{name:24s} {count_params(create_model(name, 10, 3, 32)):>12,d} params")


@app.command()
def datasets() -> None:
    """List registered datasets."""
    from kdlab.data import list_datasets

    for name in list_datasets():
        typer.echo(name)
