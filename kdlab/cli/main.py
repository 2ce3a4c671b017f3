"""`kdlab` command line. Each command lives in its own module and registers itself on ``app``."""
from __future__ import annotations

import sys

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Knowledge distillation: train teachers, distill students, evaluate, compare, export.")


def _register() -> None:
    import importlib

    for mod in ("train", "distill", "evaluate", "compare", "demo", "info", "bench", "cache", "export",
                "report", "init", "schemes"):
        try:
            importlib.import_module(f"kdlab.cli.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"kdlab.cli.{mod}":
                raise


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2 (no traceback).

    Usage errors (unknown command/option) are handled by typer's own standalone mode, also exit 2.
    """
    from kdlab.errors import KDLabError

    _register()
    try:
        app()
    except KDLabError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
