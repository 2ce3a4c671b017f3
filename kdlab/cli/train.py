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
          adversarial: Optional[str] = typer.Option(None, help="train on PGD examples crafted against the "
                                                     "student every step: pgd (docs/robustness.md)"),
          adv_eps: Optional[float] = typer.Option(None, help="its L-inf radius in [0, 1] pixels (default 0.1)"),
          adv_steps: Optional[int] = typer.Option(None, help="its PGD steps per batch (default 10)"),
          resume: bool = typer.Option(False, help="continue an interrupted run in --out from its last checkpoint"),
          quiet: bool = typer.Option(False, help="no progress bar")) -> None:
    """Train a model from labels alone (a teacher, or a student baseline).

    Examples:

      kdlab train --data digits --model cnn_small --epochs 5 --out runs/digits-teacher

      kdlab train configs/teachers/fmnist_vgg8.yaml train.epochs=2

      kdlab train --data fashion-mnist --model resnet20 --adversarial pgd --adv-eps 0.1 --out runs/robust
    """
    from kdlab.api import run

    flags = {"data.name": data, "data.root": root, "student.name": model, "train.epochs": epochs, "train.lr": lr,
             "train.batch_size": batch_size, "seed": seed, "out": out}
    if adversarial is not None:
        flags.update({"adversarial.attack": adversarial, "adversarial.eps": adv_eps, "adversarial.steps": adv_steps})
    cfg = build_config(config, ctx.args, flags,
                       base={"methods": [{"name": "ce"}]})
    cfg = cfg.model_copy(update={"teacher": None})
    print_summary(run(cfg, command="train", resume=resume, progress=not quiet))
