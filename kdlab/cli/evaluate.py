from __future__ import annotations

import json
from typing import Optional

import typer

from kdlab.cli.main import app


@app.command("eval")
def eval_(checkpoint: str = typer.Argument(..., help="a checkpoint (run/best or run/best.safetensors)"),
          data: Optional[str] = typer.Option(None, help="dataset (default: the one it was trained on, with its split)"),
          root: Optional[str] = typer.Option(None, help="dataset directory (default: the recorded one)"),
          split: str = typer.Option("test", help="train | val | test"),
          as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Evaluate a checkpoint: top-1, macro precision/recall/F1, NLL, ECE.

    The data, its options and its train/val/test split come from the checkpoint unless --data or
    --root say otherwise.

    Example:  kdlab eval runs/digits-teacher/best
    """
    from kdlab.api import evaluate
    from kdlab.data import data_for_checkpoint
    from kdlab.errors import ConfigError
    from kdlab.store.checkpoint import load_meta

    if split not in ("train", "val", "test"):
        raise ConfigError(f"--split must be train, val or test, not {split!r}")
    m = evaluate(checkpoint, data_for_checkpoint(load_meta(checkpoint), data, root), split=split)
    if as_json:
        typer.echo(json.dumps(m, indent=2))
    else:
        typer.echo("  ".join(f"{k} {v:.4f}" for k, v in m.items()))
