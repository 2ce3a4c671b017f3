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
    class_list,
    pct,
    run_flags,
    run_scheme_command,
)
from kdlab.cli.common import SCHEME_HELP as H
from kdlab.cli.main import app


@app.command("lifelong", context_settings=EXTRA)
def lifelong_cmd(ctx: typer.Context,
                 config: Optional[str] = typer.Argument(None, help=H["config"]),
                 model: Optional[str] = typer.Option(None, help="the old model: model name (trained here on the old "
                                                     "classes) or checkpoint (default cnn_small)"),
                 old: Optional[str] = typer.Option(None, help="classes the old model knows (default 0-4)"),
                 new: Optional[str] = typer.Option(None, help="classes to learn (default: all the others)"),
                 old_epochs: Optional[int] = typer.Option(None, help="epochs for the old model (default --epochs)"),
                 T: Optional[float] = typer.Option(None, "--T", help="temperature of the LwF term (default 2)"),
                 weight: Optional[float] = typer.Option(None, help="distillation weight λ_o (default 1)"),
                 baseline: Optional[bool] = typer.Option(None, "--baseline/--no-baseline",
                                                         help="also fine-tune without distillation (default on)"),
                 data: Optional[str] = DATA, root: Optional[str] = ROOT,
                 subset: Optional[int] = SUBSET,
                 epochs: Optional[int] = EPOCHS,
                 seed: Optional[int] = SEED, lr: Optional[float] = LR,
                 batch_size: Optional[int] = BATCH_SIZE,
                 out: Optional[str] = OUT,
                 resume: bool = RESUME,
                 quiet: bool = QUIET,
                 as_json: bool = JSON) -> None:
    """Learning without Forgetting: learn new classes from new data only while distilling the old
    model's answers; reports old- and new-class accuracy with and without distillation.

    Examples:

      kdlab lifelong --old 0-4 --data digits --epochs 5

      kdlab lifelong --model cnn_small --old 0-4 --new 5-9 --data fashion-mnist --subset 10000

      kdlab lifelong lwf.yaml scheme.weight=2 --resume --out runs/lwf
    """
    def lines(r: Any) -> list[str]:
        out = [f"old model on old classes: {pct(r.extra['before'].get('old_acc'))}"]
        for name in ("lwf", "finetune"):
            if name in r.extra:
                a = r.extra[name]
                out.append(f"{name:<8} old {pct(a.get('old_acc'))} (task-aware {pct(a.get('old_acc_task_aware'))})  "
                           f"new {pct(a.get('new_acc'))} (task-aware {pct(a.get('new_acc_task_aware'))})  "
                           f"all {pct(a.get('all_acc'))}")
        return out

    run_scheme_command(
        "lifelong", config, ctx.args,
        flags=run_flags(data, root, subset, epochs, seed, lr, batch_size, out),
        scheme={"model": model, "old_classes": class_list(old, "--old"), "new_classes": class_list(new, "--new"),
                "old_epochs": old_epochs, "T": T, "weight": weight, "baseline": baseline},
        resume=resume, quiet=quiet, as_json=as_json, lines=lines)
