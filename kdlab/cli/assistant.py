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


@app.command("assistant", context_settings=EXTRA)
def assistant_cmd(ctx: typer.Context,
                  config: Optional[str] = typer.Argument(None, help=H["config"]),
                  teacher: Optional[str] = typer.Option(None, help="teacher: model name (trained here) or checkpoint "
                                                        "(default cnn_large)"),
                  assistant: Optional[str] = typer.Option(None, help="assistant model(s), comma-separated, largest "
                                                          "first (default cnn_small)"),
                  student: Optional[str] = typer.Option(None, help="student model (default cnn_tiny)"),
                  teacher_epochs: Optional[int] = typer.Option(None, help="epochs for a teacher trained here"),
                  direct: Optional[bool] = typer.Option(None, "--direct/--no-direct",
                                                        help="also distill the teacher straight into the student "
                                                        "(default on)"),
                  method: Optional[str] = typer.Option(None, help="objective of every link, e.g. kd or dkd "
                                                       "(default kd)"),
                  alpha: Optional[float] = typer.Option(None, help="weight of the response-family methods "
                                                        "(default: the paper's; kd 0.9)"),
                  T: Optional[float] = typer.Option(None, "--T", help="temperature (default: the paper's; kd 4)"),
                  data: Optional[str] = DATA, root: Optional[str] = ROOT,
                  subset: Optional[int] = SUBSET,
                  epochs: Optional[int] = EPOCHS,
                  seed: Optional[int] = SEED, lr: Optional[float] = LR,
                  batch_size: Optional[int] = BATCH_SIZE,
                  out: Optional[str] = OUT,
                  resume: bool = RESUME,
                  quiet: bool = QUIET,
                  as_json: bool = JSON) -> None:
    """Teacher-assistant KD: teacher → assistant(s) → student in one command.

    Examples:

      kdlab assistant --teacher cnn_large --assistant cnn_small --student mlp_tiny --data digits --epochs 5

      kdlab assistant --teacher runs/t/best --assistant cnn_medium,cnn_small --student cnn_tiny --data fashion-mnist

      kdlab assistant ta.yaml scheme.direct=false --resume --out runs/ta
    """

    def lines(r):
        out = [f"{c['role']:<11} {c['model']:<14} test acc {pct(c['test_acc'])}" for c in r.extra["chain"]]
        if "direct_acc" in r.extra:
            out.append(f"direct (teacher → student, no assistant): test acc {pct(r.extra['direct_acc'])}")
        return out

    run_scheme_command(
        "assistant", config, ctx.args,
        flags=run_flags(data, root, subset, epochs, seed, lr, batch_size, out),
        scheme={"teacher": teacher, "assistants": csv_list(assistant, "--assistant"), "student": student,
                "teacher_epochs": teacher_epochs, "direct": direct, "method": method, "alpha": alpha, "T": T},
        resume=resume, quiet=quiet, as_json=as_json, lines=lines)
