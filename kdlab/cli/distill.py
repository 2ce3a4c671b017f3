from __future__ import annotations

from typing import Optional

import typer

from kdlab.cli.common import EXTRA, build_config, methods_flag, print_summary
from kdlab.cli.main import app


@app.command(context_settings=EXTRA)
def distill(ctx: typer.Context,
            config: Optional[str] = typer.Argument(None, help="YAML config (optional)"),
            teacher: Optional[str] = typer.Option(None, help="teacher checkpoint (a run's best/last)"),
            student: Optional[str] = typer.Option(None, help="student model name"),
            data: Optional[str] = typer.Option(None, help="dataset name"),
            method: Optional[str] = typer.Option(None, help="method(s): kd, dkd, kd+fitnet … (kdlab methods)"),
            alpha: Optional[float] = typer.Option(None, help="weight of the first method; CE gets 1 − alpha"),
            T: Optional[float] = typer.Option(None, "--T", help="temperature of the first method"),
            epochs: Optional[int] = typer.Option(None),
            lr: Optional[float] = typer.Option(None),
            batch_size: Optional[int] = typer.Option(None),
            seed: Optional[int] = typer.Option(None),
            out: Optional[str] = typer.Option(None, help="run directory"),
            resume: bool = typer.Option(False, help="continue an interrupted run in --out"),
            quiet: bool = typer.Option(False, help="no progress bar")) -> None:
    """Distill a teacher into a student (Hinton KD by default: 0.9·T²·KL + 0.1·CE, T=4).

    Examples:

      kdlab distill --teacher runs/t/best --student mlp_tiny --data digits --epochs 5

      kdlab distill configs/fmnist_kd.yaml method=... train.epochs=3 methods.1.T=2
    """
    from kdlab.api import run

    flags = {"teacher.checkpoint": teacher, "student.name": student, "data.name": data, "train.epochs": epochs,
             "train.lr": lr, "train.batch_size": batch_size, "seed": seed, "out": out,
             "methods": methods_flag(method, alpha, T)}
    cfg = build_config(config, ctx.args, flags,
                       base={"methods": [{"name": "ce", "weight": 0.1}, {"name": "kd", "weight": 0.9, "T": 4.0}]})
    print_summary(run(cfg, command="distill", resume=resume, progress=not quiet))
