from __future__ import annotations

import json
from typing import Optional

import typer

from kdlab.cli.main import app


@app.command("eval")
def eval_(checkpoint: str = typer.Argument(..., help="a checkpoint (run/best or run/best.safetensors)"),
          data: Optional[str] = typer.Option(None, help="dataset (default: the one it was trained on)"),
          root: Optional[str] = typer.Option(None, help="dataset directory"),
          split: str = typer.Option("test", help="train | val | test"),
          seed: int = typer.Option(0, help="split seed"),
          as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Evaluate a checkpoint: top-1, macro precision/recall/F1, NLL, ECE.

    Example:  kdlab eval runs/digits-teacher/best --data digits
    """
    from kdlab.api import evaluate
    from kdlab.store.checkpoint import load_meta
    from kdlab.errors import ConfigError

    if split not in ("train", "val", "test"):
        raise ConfigError(f"--split must be train, val or test, not {split!r}")
    name = data or load_meta(checkpoint).get("data")
    if not name:
        raise ConfigError("--data is required: the checkpoint does not say which dataset it was trained on")
    m = evaluate(checkpoint, name, split=split, root=root, seed=seed)
    if as_json:
        typer.echo(json.dumps(m, indent=2))
    else:
        typer.echo("  ".join(f"{k} {v:.4f}" for k, v in m.items()))
