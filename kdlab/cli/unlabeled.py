from __future__ import annotations

from typing import Any, Optional

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
    pct,
    run_flags,
    run_scheme_command,
)
from kdlab.cli.common import SCHEME_HELP as H
from kdlab.cli.main import app


@app.command("unlabeled", context_settings=EXTRA)
def unlabeled_cmd(ctx: typer.Context,
                  config: Optional[str] = typer.Argument(None, help=H["config"]),
                  teacher: Optional[str] = typer.Option(None, help="teacher: model name (trained on the labeled part) "
                                                        "or checkpoint (default cnn_small)"),
                  student: Optional[str] = typer.Option(None, help="student model (default cnn_tiny)"),
                  labeled: Optional[float] = typer.Option(None, help="labeled fraction of the training set "
                                                          "(default 0.05)"),
                  method: Optional[str] = typer.Option(None, help="distillation method(s), e.g. kd (default)"),
                  alpha: Optional[float] = typer.Option(None, help="distillation weight; CE gets 1 - alpha "
                                                        "(default 0.9)"),
                  T: Optional[float] = typer.Option(None, "--T", help="temperature (default 4)"),
                  labeled_epochs: Optional[int] = typer.Option(None, help="epochs of the models trained on the "
                                                               "labeled part alone (default: step-matched)"),
                  baseline: Optional[bool] = typer.Option(None, "--baseline/--no-baseline",
                                                          help="also train the student on the labeled part alone "
                                                          "(default on)"),
                  data: Optional[str] = DATA, root: Optional[str] = ROOT,
                  subset: Optional[int] = SUBSET,
                  epochs: Optional[int] = EPOCHS,
                  seed: Optional[int] = SEED, lr: Optional[float] = LR,
                  batch_size: Optional[int] = BATCH_SIZE,
                  out: Optional[str] = OUT,
                  resume: bool = RESUME,
                  quiet: bool = QUIET,
                  as_json: bool = JSON) -> None:
    """Less labelling: a labeled fraction plus an unlabeled pool that the teacher soft-labels.

    Examples:

      kdlab unlabeled --labeled 0.05 --data digits --epochs 5

      kdlab unlabeled --labeled 0.01 --teacher cnn_small --student cnn_tiny --data fashion-mnist --subset 10000

      kdlab unlabeled less_labels.yaml scheme.labeled=0.1 --resume --out runs/unl
    """
    def lines(r: Any) -> list[str]:
        e = r.extra
        out = [f"{e['labeled']} labeled, {e['pool']} unlabeled; teacher test acc {pct(e['teacher_acc'])}"]
        if "baseline_acc" in e:
            out.append(f"student on the labeled part alone: {pct(e['baseline_acc'])}")
        return out

    run_scheme_command(
        "unlabeled", config, ctx.args,
        flags=run_flags(data, root, subset, epochs, seed, lr, batch_size, out),
        scheme={"teacher": teacher, "student": student, "labeled": labeled, "method": method, "alpha": alpha, "T": T,
                "labeled_epochs": labeled_epochs, "baseline": baseline},
        resume=resume, quiet=quiet, as_json=as_json, lines=lines)
