"""``kdlab tune``: an Optuna study over a distillation's hyperparameters (see kdlab.tune)."""
from __future__ import annotations

from typing import Optional

import typer

from kdlab.cli.common import EXTRA
from kdlab.cli.main import app


@app.command(context_settings=EXTRA)
def tune(ctx: typer.Context,
         config: Optional[str] = typer.Argument(None, help="YAML run config with a tune: section (optional)"),
         teacher: Optional[str] = typer.Option(None, help="teacher checkpoint (a run's best/last)"),
         student: Optional[str] = typer.Option(None, help="student model name"),
         data: Optional[str] = typer.Option(None, help="dataset name"),
         trials: Optional[int] = typer.Option(None, help="finished trials the study ends with (tune.trials)"),
         epochs: Optional[int] = typer.Option(None, help="epochs of one trial (tune.epochs)"),
         timeout: Optional[float] = typer.Option(None, help="seconds this process tunes at most (tune.timeout)"),
         out: Optional[str] = typer.Option(None, help="study directory (tune.dir)"),
         storage: Optional[str] = typer.Option(None, help="Optuna RDB storage URL shared by several processes "
                                                          "(default sqlite:///<dir>/study.db)")) -> None:
    """Tune T, α, the method, its weights and hyperparameters and the learning rate on the validation split.

    Resumes the study in its directory (after a kill too); several processes given the same
    --storage (or directory) share one study. Writes <dir>/best.yaml (run it with kdlab distill)
    and <dir>/report.md.

    Examples:

      kdlab tune --teacher runs/t/best --student cnn_tiny --data digits --trials 20

      kdlab tune configs/tune_fmnist.yaml tune.trials=60 tune.timeout=3600
    """
    from kdlab.cli.common import _yaml, split_args
    from kdlab.tune import load_tune
    from kdlab.tune import tune as run_tune

    path, overrides = split_args(config, ctx.args)
    flags = {"teacher.checkpoint": teacher, "student.name": student, "data.name": data, "tune.trials": trials,
             "tune.epochs": epochs, "tune.timeout": timeout, "tune.dir": out, "tune.storage": storage}
    flag_overrides = [f"{k}={_yaml(v)}" for k, v in flags.items() if v is not None]
    cfg, spec = load_tune(path, flag_overrides + overrides)
    run_tune(cfg, spec, say=typer.echo)
