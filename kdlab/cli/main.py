"""`kdlab` command line. Each command lives in its own module and registers itself on ``app``."""
from __future__ import annotations

import sys

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Knowledge distillation: train teachers, distill students, evaluate, compare, export.")


# Where `kdlab --help` starts: the main workflow. Display order only; discovery does not use it.
_HELP_FIRST = ("train", "distill", "evaluate", "compare", "demo", "info")


def _register() -> list[str]:
    """Import every command module of :mod:`kdlab.cli`; each adds its commands to ``app``.

    Called from :func:`main` rather than at import time: the command modules import ``app`` from
    here, so this module must be fully initialised first. Importing twice is harmless. A command
    module that fails to import fails the whole command line, not just that command.
    """
    import kdlab.cli
    from kdlab.registry import import_submodules

    modules = import_submodules(kdlab.cli.__name__, kdlab.cli.__path__)
    first = {m: i for i, m in enumerate(_HELP_FIRST)}
    app.registered_commands.sort(  # stable: the other commands keep their module order
        key=lambda c: first.get(getattr(c.callback, "__module__", "").rpartition(".")[2], len(first)))
    return modules


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2 (no traceback).

    Usage errors (unknown command/option) are handled by typer's own standalone mode, also exit 2.
    """
    from kdlab.engine.allocator import tune_allocator
    from kdlab.errors import KDLabError

    tune_allocator()  # before the first large tensor: teachers, caches and training reuse warm heap pages
    _register()
    try:
        app()
    except KDLabError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
