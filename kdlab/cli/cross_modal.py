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


@app.command("cross-modal", context_settings=EXTRA)
def cross_modal_cmd(ctx: typer.Context,
                    config: Optional[str] = typer.Argument(None, help=H["config"]),
                    teacher: Optional[str] = typer.Option(None, help="model name (trained here on its view), "
                                                          "checkpoint, or a .npy/.npz file of per-sample outputs "
                                                          "(default cnn_small)"),
                    student: Optional[str] = typer.Option(None, help="student model (default cnn_tiny)"),
                    teacher_view: Optional[str] = typer.Option(None, help="full (default) | lowres:K | blur:K | "
                                                               "edges | gray | channel:i"),
                    student_view: Optional[str] = typer.Option(None, help="the student's view (same choices; "
                                                               "default lowres:2)"),
                    method: Optional[str] = typer.Option(None, help="distillation method(s), e.g. kd (default)"),
                    alpha: Optional[float] = typer.Option(None, help="KD weight; 1 = learn from the teacher's "
                                                          "outputs alone (default 0.9)"),
                    T: Optional[float] = typer.Option(None, "--T", help="temperature (default 4)"),
                    teacher_epochs: Optional[int] = typer.Option(None, help="epochs for a teacher trained here "
                                                                 "(default --epochs)"),
                    baseline: Optional[bool] = typer.Option(None, "--baseline/--no-baseline",
                                                            help="also train the student on its view from labels "
                                                            "(default on)"),
                    save_teacher_outputs: Optional[str] = typer.Option(None, help="write the teacher's outputs over "
                                                                       "the training split to this .npz"),
                    data: Optional[str] = DATA, root: Optional[str] = ROOT,
                    subset: Optional[int] = SUBSET,
                    epochs: Optional[int] = EPOCHS,
                    seed: Optional[int] = SEED, lr: Optional[float] = LR,
                    batch_size: Optional[int] = BATCH_SIZE,
                    out: Optional[str] = OUT,
                    resume: bool = RESUME,
                    quiet: bool = QUIET,
                    as_json: bool = JSON) -> None:
    """Cross-modal / black-box distillation: the teacher sees one view, the student another
    (paired by sample id), or the teacher is only a file of per-sample outputs.

    Examples:

      kdlab cross-modal --teacher cnn_small --student cnn_tiny --student-view lowres:2 --data digits --epochs 5

      kdlab cross-modal --teacher cnn_small --student-view edges --save-teacher-outputs t.npz --data digits

      kdlab cross-modal --teacher t.npz --student-view full --alpha 1 --data digits --epochs 5
    """
    def lines(r: Any) -> list[str]:
        v = r.extra["views"]
        out = [f"teacher ({v['teacher']}) test acc {pct(r.extra['teacher_acc'])}; student sees {v['student']}"]
        if "baseline_acc" in r.extra:
            out.append(f"student from labels alone: {pct(r.extra['baseline_acc'])}")
        if r.extra.get("teacher_outputs"):
            out.append(f"teacher outputs written to {r.extra['teacher_outputs']}")
        return out

    run_scheme_command(
        "cross-modal", config, ctx.args,
        flags=run_flags(data, root, subset, epochs, seed, lr, batch_size, out),
        scheme={"teacher": teacher, "student": student, "teacher_view": teacher_view, "student_view": student_view,
                "method": method, "alpha": alpha, "T": T, "teacher_epochs": teacher_epochs, "baseline": baseline,
                "save_teacher_outputs": save_teacher_outputs},
        resume=resume, quiet=quiet, as_json=as_json, lines=lines)
