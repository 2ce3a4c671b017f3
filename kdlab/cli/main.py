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
    """Entry point: user errors become one line on stderr and exit code 2 (no traceback)."""
    from kdlab.errors import KDLabError

    _register()
    try:
        app(standalone_mode=False)
    except KDLabError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as e:  # usage errors (typer may vendor its own click): one line, exit 2
        if _is_click_error(e):
            msg = e.format_message()  # type: ignore[attr-defined]
            if msg:  # empty after `kdlab` alone printed the help
                typer.echo(f"error: {msg}", err=True)
            sys.exit(2)
        raise


def _is_click_error(e: BaseException) -> bool:
    import importlib

    for mod in ("click.exceptions", "typer._click.exceptions"):
        try:
            if isinstance(e, importlib.import_module(mod).ClickException):
                return True
        except (ImportError, AttributeError):
            continue
    return False
