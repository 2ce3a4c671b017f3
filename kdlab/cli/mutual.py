from __future__ import annotations

from typing import Optional

import typer

from kdlab.cli.common import (
    BATCH_SIZE,
    DATA,
    EPOCHS,
    EXTRA,
    JSON,
    LR,
    OUT,
    QUIET,
    RESUME,
    ROOT,
    SEED,
    SUBSET,
    csv_list,
    pct,
    run_flags,
    run_scheme_command,
)
from kdlab.cli.common import SCHEME_HELP as H
from kdlab.cli.main import app


@app.command("mutual", context_settings=EXTRA)
def mutual_cmd(ctx: typer.Context,
               config: Optional[str] = typer.Argument(None, help=H["config"]),
               peers: Optional[str] = typer.Option(None, help="comma-separated peer models (≥ 2, may differ; "
                                                   "default cnn_tiny,cnn_small)"),
               T: Optional[float] = typer.Option(None, "--T", help="temperature of the peer KL terms (default 1)"),
               weight: Optional[float] = typer.Option(None, help="weight of each peer's KL to the others (default 1)"),
               data: Optional[str] = DATA, root: Optional[str] = ROOT,
               subset: Optional[int] = SUBSET,
               epochs: Optional[int] = EPOCHS,
               seed: Optional[int] = SEED, lr: Optional[float] = LR,
               batch_size: Optional[int] = BATCH_SIZE,
               out: Optional[str] = OUT,
               resume: bool = RESUME, quiet: bool = QUIET,
               as_json: bool = JSON) -> None:
    """Online distillation (deep mutual learning): peers train together, each learning from the others.

    Examples:

      kdlab mutual --peers cnn_tiny,cnn_small --data digits --epochs 5

      kdlab mutual --peers cnn_tiny,cnn_tiny,mlp --data fashion-mnist --subset 10000 --epochs 5 --out runs/dml

      kdlab mutual dml.yaml scheme.T=2 --resume --out runs/dml
    """
    run_scheme_command(
        "mutual", config, ctx.args,
        flags=run_flags(data, root, subset, epochs, seed, lr, batch_size, out),
        scheme={"peers": csv_list(peers, "--peers"), "T": T, "weight": weight},
        resume=resume, quiet=quiet, as_json=as_json,
        lines=lambda r: [f"peer{i} {p['model']:<14} test acc {pct(p['test_acc'])}  (best val {pct(p['val_acc'])})"
                         for i, p in enumerate(r.extra["peers"])] + [f"deployed: peer{r.extra['deployed']}"])
