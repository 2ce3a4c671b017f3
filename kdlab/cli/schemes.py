"""Distillation schemes on the command line: mutual, self-distill, assistant, multi-teacher,
amalgamate, unlabeled, lifelong, cross-modal. Each is a thin layer over kdlab.schemes."""
from __future__ import annotations

import json
from typing import Any, Optional

import typer

from kdlab.cli.main import app
from kdlab.errors import ConfigError

DATA = typer.Option("digits", help="dataset name (kdlab datasets)")
SUBSET = typer.Option(None, help="keep this many training (and at most this many test) samples")
EPOCHS = typer.Option(10, help="epochs of the scheme's main training")
SEED = typer.Option(0)
LR = typer.Option(None, help="learning rate (default 0.05, SGD)")
BS = typer.Option(None, help="batch size (default 128)")
OUT = typer.Option(None, help="directory for the runs' checkpoints and metrics (default: not saved)")
QUIET = typer.Option(False, help="no progress bars")
JSON = typer.Option(False, "--json", help="print the full result as JSON")


def _data(name: str, subset: Optional[int], seed: int):
    from kdlab.data import load_data

    return load_data(name, split_seed=seed, subset=subset)


def _opts(lr: Optional[float], batch_size: Optional[int]) -> dict[str, Any]:
    return {k: v for k, v in {"lr": lr, "batch_size": batch_size}.items() if v is not None}


def _list(s: str, what: str) -> list[str]:
    items = [x.strip() for x in s.split(",") if x.strip()]
    if not items:
        raise ConfigError(f"{what} is empty")
    return items


def _classes(spec: str) -> list[int]:
    """``0-4`` or ``0,2,4`` or ``0-2,7`` → class ids."""
    out: list[int] = []
    try:
        for part in spec.split(","):
            part = part.strip()
            if "-" in part:
                a, b = part.split("-", 1)
                out += list(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise ConfigError(f"bad class list {spec!r}: use e.g. 0-4 or 0,2,4") from None
    return out


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items() if isinstance(v, (int, float, str, list, dict, type(None)))}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def _report(r: Any, as_json: bool, lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps({"test": r.test, "best_val_acc": r.best_val_acc, "seconds": round(r.seconds, 2),
                               "extra": _clean(r.extra)}, indent=2))
        return
    for line in lines:
        typer.echo(line)
    typer.echo(f"student test acc {_pct(r.test['acc'])}  (train {r.seconds:.1f}s)")
    if r.run_dir is not None:
        typer.echo(f"run directory: {r.run_dir}")
