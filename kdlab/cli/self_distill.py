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


def _lines(r: Any) -> list[str]:
    x = r.extra
    if x.get("kind") == "byot":
        return [f"exit {k:<8} test acc {pct(v)}" for k, v in x["exits"].items()]
    if x.get("kind") == "born-again":
        return [f"generation {g['generation']}  test acc {pct(g['test_acc'])}" for g in x["generations"]] + [
            f"ensemble of generations  test acc {pct(x['ensemble_acc'])}"]
    return [f"snapshot after epoch {x['snapshot_epoch']}: test acc {pct(x['teacher_acc'])}"]


@app.command("self-distill", context_settings=EXTRA)
def self_distill_cmd(ctx: typer.Context,
                     config: Optional[str] = typer.Argument(None, help=H["config"]),
                     kind: Optional[str] = typer.Option(None, help="byot | born-again | snapshot (default byot)"),
                     model: Optional[str] = typer.Option(None, help="model name (default cnn_small)"),
                     generations: Optional[int] = typer.Option(None, help="born-again: generations after the first "
                                                               "(default 2)"),
                     teacher: Optional[str] = typer.Option(None, help="born-again: generation 0 from this checkpoint "
                                                           "(default: trained here)"),
                     at_epoch: Optional[int] = typer.Option(None, help="snapshot: epochs before the snapshot is taken "
                                                            "(default: half)"),
                     method: Optional[str] = typer.Option(None, help="born-again, snapshot: distillation method(s) "
                                                          "(default kd)"),
                     alpha: Optional[float] = typer.Option(None, help="KD weight (byot 0.3, born-again 0.9, "
                                                           "snapshot 0.5)"),
                     T: Optional[float] = typer.Option(None, "--T", help="temperature (byot 3, others 4)"),
                     hint: Optional[float] = typer.Option(None, help="byot: weight of the exits' L2 hint (default "
                                                          "0.03)"),
                     data: Optional[str] = DATA, root: Optional[str] = ROOT,
                     subset: Optional[int] = SUBSET,
                     epochs: Optional[int] = EPOCHS,
                     seed: Optional[int] = SEED, lr: Optional[float] = LR,
                     batch_size: Optional[int] = BATCH_SIZE,
                     out: Optional[str] = OUT,
                     resume: bool = RESUME,
                     quiet: bool = QUIET,
                     as_json: bool = JSON) -> None:
    """Self-distillation: auxiliary exits taught by the deepest one (byot), born-again generations,
    or a snapshot of the model teaching its own last epochs.

    Born-again keeps every generation but the last in <out>/gen0/, <out>/gen1/, ...; the last
    generation (the deployed student) is the run directory itself.

    Examples:

      kdlab self-distill --kind byot --model cnn_small --data digits --epochs 5

      kdlab self-distill --kind born-again --generations 2 --model cnn_tiny --data fashion-mnist --subset 10000

      kdlab self-distill --kind snapshot --at-epoch 4 --model cnn_tiny --data digits --epochs 8

      kdlab self-distill sd.yaml scheme.kind=snapshot --resume --out runs/sd
    """
    run_scheme_command(
        "self-distill", config, ctx.args,
        flags=run_flags(data, root, subset, epochs, seed, lr, batch_size, out),
        scheme={"kind": kind, "model": model, "generations": generations, "teacher": teacher, "at_epoch": at_epoch,
                "method": method, "alpha": alpha, "T": T, "hint": hint},
        resume=resume, quiet=quiet, as_json=as_json, lines=_lines)
