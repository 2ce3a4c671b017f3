from __future__ import annotations

from typing import Optional

import typer

from kdlab.cli.common import EXTRA, build_config, print_summary
from kdlab.cli.main import app


@app.command(context_settings=EXTRA)
def distill(ctx: typer.Context,
            config: Optional[str] = typer.Argument(None, help="YAML config (optional)"),
            teacher: Optional[str] = typer.Option(None, help="teacher checkpoint (a run's best/last)"),
            student: Optional[str] = typer.Option(None, help="student model name"),
            data: Optional[str] = typer.Option(None, help="dataset name"),
            root: Optional[str] = typer.Option(None, help="dataset file or directory (data.root)"),
            method: Optional[str] = typer.Option(None, help="method(s): kd, dkd, kd+fitnet … (kdlab methods)"),
            alpha: Optional[float] = typer.Option(None, help="weight of every response-family (logit) method; CE "
                                                  "gets 1 − alpha (default: each method's paper weight)"),
            T: Optional[float] = typer.Option(None, "--T", help="temperature of every response-family method "
                                              "that has one (default: the paper's)"),
            epochs: Optional[int] = typer.Option(None),
            lr: Optional[float] = typer.Option(None),
            batch_size: Optional[int] = typer.Option(None),
            seed: Optional[int] = typer.Option(None),
            out: Optional[str] = typer.Option(None, help="run directory"),
            adversarial: Optional[str] = typer.Option(None, help="train on PGD examples crafted against the "
                                                       "student every step: pgd (docs/robustness.md)"),
            adv_eps: Optional[float] = typer.Option(None, help="its L-inf radius in [0, 1] pixels (default 0.1)"),
            adv_steps: Optional[int] = typer.Option(None, help="its PGD steps per batch (default 10)"),
            adv_target: Optional[str] = typer.Option(None, help="what the examples maximise: labels (CE; PGD-AT, "
                                                      "ARD) or teacher (KL from its soft labels; RSLAD)"),
            resume: bool = typer.Option(False, help="continue an interrupted run in --out"),
            quiet: bool = typer.Option(False, help="no progress bar")) -> None:
    """Distill a teacher into a student (Hinton KD by default: 0.9·T²·KL + 0.1·CE, T=4).

    Why KD by default: in the main job's regime (the shipped resnet56 → resnet8, Fashion-MNIST with
    augmentation, the teacher answering the student's own views) it scored best of KD, NKD, DIST,
    KD at α=1, KD at T=2 and KD with mixup (benchmarks/recipe.md), and a cache can serve it.

    Without --alpha/--T every method keeps its paper weight and temperature (at+kd: AT at 1000, KD
    at 0.9, CE at 0.1); --alpha and --T apply to the response-family (logit) methods only, also
    to the methods of a config file.

    Examples:

      kdlab distill --teacher runs/t/best --student mlp_tiny --data digits --epochs 5

      kdlab distill configs/fmnist_kd.yaml method=... train.epochs=3 methods.1.T=2

      kdlab distill --teacher runs/robust/best --student resnet8 --data fashion-mnist --adversarial pgd
    """
    from kdlab.api import run

    flags = {"teacher.checkpoint": teacher, "student.name": student, "data.name": data, "data.root": root,
             "train.epochs": epochs,
             "train.lr": lr, "train.batch_size": batch_size, "seed": seed, "out": out}
    if adversarial is not None:
        flags.update({"adversarial.attack": adversarial, "adversarial.eps": adv_eps, "adversarial.steps": adv_steps,
                      "adversarial.target": adv_target})
    from kdlab.objective import DEFAULT_METHOD, parse_objective

    cfg = build_config(config, ctx.args, flags, base={"methods": parse_objective(DEFAULT_METHOD)},
                       objective=(method, alpha, T))
    print_summary(run(cfg, command="distill", resume=resume, progress=not quiet))
