from __future__ import annotations

from typing import Optional

import typer

from kdlab.cli.common import EXTRA, build_config, print_summary
from kdlab.cli.main import app


@app.command(context_settings=EXTRA)
def train(ctx: typer.Context,
          config: Optional[str] = typer.Argument(None, help="YAML config (optional)"),
          data: Optional[str] = typer.Option(None, help="dataset name (kdlab datasets)"),
          root: Optional[str] = typer.Option(None, help="dataset file or directory (data.root)"),
          model: Optional[str] = typer.Option(None, help="model name (kdlab models)"),
          epochs: Optional[int] = typer.Option(None),
          lr: Optional[float] = typer.Option(None),
          batch_size: Optional[int] = typer.Option(None),
          seed: Optional[int] = typer.Option(None),
          out: Optional[str] = typer.Option(None, help="run directory"),
          resume: bool = typer.Option(False, help="continue an interrupted run in --out from its last checkpoint"),
          quiet: bool = typer.Option(False, help="no progress bar")) -> None:
    """Train a model from labels alone (a teacher, or a student baseline).

    Examples:

      kdlab train --data digits --model cnn_small --epochs 5 --out runs/digits-teacher

      kdlab train configs/teachers/fmnist_vgg8.yaml train.epochs=2
    """
    from kdlab.api import run

    cfg = build_config(config, ctx.args, {"data.name": data, "data.root": root, "student.name": model,
                                          "train.epochs": epochs,
                                          "train.lr": lr, "train.batch_size": batch_size, "seed": seed, "out": out},
                       base={"methods": [{"name": "ce"}]})
    cfg = cfg.model_copy(update={"teacher": None})
    print_summary(run(cfg, command="train", resume=resume, progress=not quiet))
