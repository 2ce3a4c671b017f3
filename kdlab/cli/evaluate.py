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
          attack: Optional[str] = typer.Option(None, help="also attack it: fgsm | pgd (L-inf, white-box)"),
          eps: float = typer.Option(0.1, help="attack radius in [0, 1] pixel units"),
          steps: int = typer.Option(20, help="PGD steps"),
          step_size: Optional[float] = typer.Option(None, help="PGD step in pixel units (default 2.5 eps / steps)"),
          restarts: int = typer.Option(1, help="PGD random restarts"),
          attack_samples: int = typer.Option(1000, help="samples of the split attacked (the first N)"),
          as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Evaluate a checkpoint: top-1, macro precision/recall/F1, NLL, ECE; with --attack, also clean
    and adversarial top-1 under FGSM or PGD (ε in [0, 1] pixel units, inputs kept in [0, 1]).

    The data, its options and its train/val/test split come from the checkpoint unless --data or
    --root say otherwise.

    Examples:

      kdlab eval runs/digits-teacher/best

      kdlab eval runs/kd/best --attack pgd --eps 0.1 --steps 20
    """
    from kdlab.api import evaluate
    from kdlab.data import data_for_checkpoint
    from kdlab.errors import ConfigError
    from kdlab.store.checkpoint import load_meta

    if split not in ("train", "val", "test"):
        raise ConfigError(f"--split must be train, val or test, not {split!r}")
    d = data_for_checkpoint(load_meta(checkpoint), data, root)
    m: dict[str, float] = evaluate(checkpoint, d, split=split)
    if attack is not None:
        from kdlab.api import attack as run_attack

        a = run_attack(checkpoint, d, split, kind=attack, eps=eps, steps=steps, step_size=step_size,
                       restarts=restarts, samples=attack_samples)
        m = {**m, **{f"{attack}_{k}": v for k, v in a.items()}}
    if as_json:
        typer.echo(json.dumps(m, indent=2))
    else:
        typer.echo("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items()))
