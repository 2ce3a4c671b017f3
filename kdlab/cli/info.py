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
    """List registered datasets with their options (defaults) and the files or arrays each expects."""
    import inspect
    import shutil
    import textwrap

    from kdlab.data import DATASETS, list_datasets

    width = min(100, shutil.get_terminal_size((100, 24)).columns)
    typer.echo("Set an option with data.options.<name>=<value>; `root` below is data.root.")
    for name in list_datasets():
        source = DATASETS.get(name)
        options = [f"{k}={p.default!r}" for k, p in inspect.signature(source).parameters.items()
                   if k != "root" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        text = textwrap.fill(_first_paragraph(source), width, initial_indent="  ", subsequent_indent="  ",
                             break_long_words=False, break_on_hyphens=False)
        typer.echo(f"\n{name}\n  options: {', '.join(options) or 'none'}\n{text.replace(_NBSP, ' ')}")


_NBSP = "\u00a0"  # joins the words of a shape like [N, C, H, W] or a range like "0" .. "K-1" while wrapping


def _first_paragraph(fn: object) -> str:
    """The first paragraph of ``fn``'s docstring on one line; reST ````literals```` become `literals`."""
    import inspect
    import re

    doc = inspect.getdoc(fn) or "(no description)"
    text = " ".join(doc.split("\n\n")[0].split()).replace("``", "`")
    text = re.sub(r"\[[^\]]*\]", lambda m: m.group().replace(" ", _NBSP), text)
    return text.replace(" .. ", f"{_NBSP}..{_NBSP}")
