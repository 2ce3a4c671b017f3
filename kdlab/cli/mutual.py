from __future__ import annotations

from typing import Optional

import typer

from kdlab.cli.common import EXTRA, csv_list, pct, run_scheme_command
from kdlab.cli.common import SCHEME_HELP as H
from kdlab.cli.main import app


@app.command("mutual", context_settings=EXTRA)
def mutual_cmd(ctx: typer.Context,
               config: Optional[str] = typer.Argument(None, help=H["config"]),
               peers: Optional[str] = typer.Option(None, help="comma-separated peer models (≥ 2, may differ; "
                                                   "default cnn_tiny,cnn_small)"),
               T: Optional[float] = typer.Option(None, "--T", help="temperature of the peer KL terms (default 1)"),
               weight: Optional[float] = typer.Option(None, help="weight of each peer's KL to the others (default 1)"),
               data: Optional[str] = typer.Option(None, help=H["data"]),
               subset: Optional[int] = typer.Option(None, help=H["subset"]),
               epochs: Optional[int] = typer.Option(None, help=H["epochs"]),
               seed: Optional[int] = typer.Option(None), lr: Optional[float] = typer.Option(None, help=H["lr"]),
               batch_size: Optional[int] = typer.Option(None, help=H["batch_size"]),
               out: Optional[str] = typer.Option(None, help=H["out"]),
               resume: bool = typer.Option(False, help=H["resume"]), quiet: bool = typer.Option(False, help=H["quiet"]),
               as_json: bool = typer.Option(False, "--json", help=H["json"])) -> None:
    """Online distillation (deep mutual learning): peers train together, each learning from the others.

    Examples:

      kdlab mutual --peers cnn_tiny,cnn_small --data digits --epochs 5

      kdlab mutual --peers cnn_tiny,cnn_tiny,mlp --data fashion-mnist --subset 10000 --epochs 5 --out runs/dml

      kdlab mutual dml.yaml scheme.T=2 --resume --out runs/dml
    """
    run_scheme_command(
        "mutual", config, ctx.args,
        flags={"data.name": data, "data.subset": subset, "train.epochs": epochs, "seed": seed, "train.lr": lr,
               "train.batch_size": batch_size, "out": out},
        scheme={"peers": csv_list(peers, "--peers"), "T": T, "weight": weight},
        resume=resume, quiet=quiet, as_json=as_json,
        lines=lambda r: [f"peer{i} {p['model']:<14} test acc {pct(p['test_acc'])}  (best val {pct(p['val_acc'])})"
                         for i, p in enumerate(r.extra["peers"])] + [f"deployed: peer{r.extra['deployed']}"])
