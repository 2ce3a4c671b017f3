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
from kdlab.errors import ConfigError


def _numbers(s: Optional[str], what: str, kind: type) -> list | None:
    items = csv_list(s, what)
    if items is None:
        return None
    try:
        return [kind(x) for x in items]
    except ValueError:
        raise ConfigError(f"bad number in {what} {s!r}") from None


@app.command("multi-teacher", context_settings=EXTRA)
def multi_teacher_cmd(ctx: typer.Context,
                      config: Optional[str] = typer.Argument(None, help=H["config"]),
                      teachers: Optional[str] = typer.Option(None, help="comma-separated teachers: model names "
                                                             "(trained here) or checkpoints (default "
                                                             "cnn_small,cnn_medium)"),
                      student: Optional[str] = typer.Option(None, help="student model (default cnn_tiny)"),
                      mode: Optional[str] = typer.Option(None, help="mean | weights | confidence | entropy | random "
                                                         "(default mean)"),
                      weights: Optional[str] = typer.Option(None, help="comma-separated weights (mode weights/random)"),
                      combine: Optional[str] = typer.Option(None, help="logits | probs (default logits)"),
                      method: Optional[str] = typer.Option(None, help="method(s), e.g. kd or kd+fitnet (default kd)"),
                      logits_from: Optional[str] = typer.Option(None, help="teacher indices giving logits, e.g. 0"),
                      features_from: Optional[str] = typer.Option(None, help="teacher indices giving features, e.g. 1"),
                      teacher_epochs: Optional[int] = typer.Option(None, help="epochs for each teacher trained here"),
                      alpha: Optional[float] = typer.Option(None, help="weight of the response-family methods "
                                                            "(default: the paper's; kd 0.9)"),
                      T: Optional[float] = typer.Option(None, "--T", help="temperature (default: the paper's; kd 4)"),
                      data: Optional[str] = DATA, root: Optional[str] = ROOT,
                      subset: Optional[int] = SUBSET,
                      epochs: Optional[int] = EPOCHS,
                      seed: Optional[int] = SEED,
                      lr: Optional[float] = LR,
                      batch_size: Optional[int] = BATCH_SIZE,
                      out: Optional[str] = OUT,
                      resume: bool = RESUME,
                      quiet: bool = QUIET,
                      as_json: bool = JSON) -> None:
    """Several teachers, one student: averaged, weighted, confidence/entropy-weighted per sample,
    a random teacher per iteration, or logits from one teacher and features from another.

    Examples:

      kdlab multi-teacher --teachers cnn_small,mlp --student cnn_tiny --mode confidence --data digits --epochs 5

      kdlab multi-teacher --teachers cnn_small,cnn_medium --method kd+fitnet --logits-from 0 --features-from 1

      kdlab multi-teacher mt.yaml scheme.mode=entropy --resume --out runs/mt
    """

    def lines(r):
        out = [f"teacher{i} {t['model']:<14} test acc {pct(t['test_acc'])}" for i, t in enumerate(r.extra["teachers"])]
        out.append(f"ensemble ({r.extra['mode']})  test acc {pct(r.extra['ensemble_acc'])}")
        return out

    run_scheme_command(
        "multi-teacher", config, ctx.args,
        flags=run_flags(data, root, subset, epochs, seed, lr, batch_size, out),
        scheme={"teachers": csv_list(teachers, "--teachers"), "student": student, "mode": mode,
                "weights": _numbers(weights, "--weights", float), "combine": combine, "method": method,
                "logits_from": _numbers(logits_from, "--logits-from", int),
                "features_from": _numbers(features_from, "--features-from", int),
                "teacher_epochs": teacher_epochs, "alpha": alpha, "T": T},
        resume=resume, quiet=quiet, as_json=as_json, lines=lines)
