from __future__ import annotations

from typing import List, Optional

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
    class_list,
    csv_list,
    pct,
    run_flags,
    run_scheme_command,
)
from kdlab.cli.common import SCHEME_HELP as H
from kdlab.cli.main import app


@app.command("amalgamate", context_settings=EXTRA)
def amalgamate_cmd(ctx: typer.Context,
                   config: Optional[str] = typer.Argument(None, help=H["config"]),
                   teachers: Optional[str] = typer.Option(None, help="comma-separated teachers, one per split: model "
                                                          "names (trained here) or checkpoints (default "
                                                          "cnn_small,cnn_small)"),
                   split: Optional[List[str]] = typer.Option(None, help="classes of each teacher (repeat: --split 0-4 "
                                                             "--split 5-9, the default)"),
                   student: Optional[str] = typer.Option(None, help="student model (default cnn_tiny)"),
                   combine: Optional[str] = typer.Option(None, help="concat (raw logits, default) | logprob"),
                   T: Optional[float] = typer.Option(None, "--T", help="temperature of the student's KD (default 4)"),
                   teacher_epochs: Optional[int] = typer.Option(None, help="epochs for each teacher trained here"),
                   baseline: Optional[bool] = typer.Option(None, "--baseline/--no-baseline",
                                                           help="also train the student with all labels (default on)"),
                   data: Optional[str] = DATA, root: Optional[str] = ROOT,
                   subset: Optional[int] = SUBSET,
                   epochs: Optional[int] = EPOCHS,
                   seed: Optional[int] = SEED, lr: Optional[float] = LR,
                   batch_size: Optional[int] = BATCH_SIZE,
                   out: Optional[str] = OUT,
                   resume: bool = RESUME,
                   quiet: bool = QUIET,
                   as_json: bool = JSON) -> None:
    """Amalgamate teachers of disjoint class subsets into one student over all classes, with no
    joint labels.

    Examples:

      kdlab amalgamate --data fashion-mnist --subset 10000 --split 0-4 --split 5-9 --epochs 5

      kdlab amalgamate --teachers cnn_small,cnn_small,cnn_small --split 0-2 --split 3-5 --split 6-9 --data digits

      kdlab amalgamate am.yaml "scheme.classes=[[0,1,2],[3,4,5,6,7,8,9]]" --resume --out runs/am
    """

    def lines(r):
        out = [f"teacher{i} {t['model']:<12} classes {t['classes']}: test acc on its classes "
               f"{pct(t['test_acc_own_classes'])}" for i, t in enumerate(r.extra["teachers"])]
        out.append(f"teachers combined ({r.extra['combine']}), full test set: {pct(r.extra['union_teacher_acc'])}")
        if "baseline_acc" in r.extra:
            out.append(f"student trained with all labels: {pct(r.extra['baseline_acc'])}")
        return out

    run_scheme_command(
        "amalgamate", config, ctx.args,
        flags=run_flags(data, root, subset, epochs, seed, lr, batch_size, out),
        scheme={"teachers": csv_list(teachers, "--teachers"),
                "classes": [class_list(s, "--split") for s in split] if split else None, "student": student,
                "combine": combine, "T": T, "teacher_epochs": teacher_epochs, "baseline": baseline},
        resume=resume, quiet=quiet, as_json=as_json, lines=lines)
