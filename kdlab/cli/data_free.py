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


@app.command("data-free", context_settings=EXTRA)
def data_free_cmd(ctx: typer.Context,
                  config: Optional[str] = typer.Argument(None, help=H["config"]),
                  teacher: Optional[str] = typer.Option(None, help="trained teacher: a kdlab checkpoint (run/best); "
                                                        "gradients flow through it, so ONNX or output files are "
                                                        "refused"),
                  student: Optional[str] = typer.Option(None, help="student model (default resnet8)"),
                  synth: Optional[str] = typer.Option(None, help="synthesizer: dafl, dfad, zskt or deepinv "
                                                      "(default dafl)"),
                  steps: Optional[int] = typer.Option(None, help="student steps (synthetic batches) per epoch "
                                                      "(default 50)"),
                  method: Optional[str] = typer.Option(None, help="the student's objective (default: the "
                                                       "synthesizer paper's, mae for dfad, kd T=1 otherwise)"),
                  T: Optional[float] = typer.Option(None, "--T", help="temperature of the objective (default: "
                                                    "its paper's, 1 for KD)"),
                  data: Optional[str] = DATA, root: Optional[str] = ROOT,
                  subset: Optional[int] = SUBSET,
                  epochs: Optional[int] = EPOCHS,
                  seed: Optional[int] = SEED, lr: Optional[float] = LR,
                  batch_size: Optional[int] = BATCH_SIZE,
                  out: Optional[str] = OUT,
                  resume: bool = RESUME,
                  quiet: bool = QUIET,
                  as_json: bool = JSON) -> None:
    """Distil a trained teacher without its training data: the student learns on synthetic inputs.

    Only the real test split is read (to measure the student). The synthesizer's own options go in
    scheme.synth_options, e.g. scheme.synth_options.iterations=100; the synthetic batch is the
    student's batch (--batch-size).

    Examples:

      kdlab data-free --teacher runs/t/best --student cnn_tiny --synth deepinv --data digits --epochs 5

      kdlab data-free --teacher kdlab/assets/teachers/fmnist_resnet56 --synth dfad --data fashion-mnist

      kdlab data-free df.yaml --resume --out runs/df
    """
    def lines(r: Any) -> list[str]:
        e = r.extra
        return [f"synthesizer {e['synth']}; teacher test acc {pct(e['teacher_acc'])}",
                f"teacher's classes of {sum(e['class_histogram'])} synthetic samples: {e['class_histogram']}; "
                f"diversity {e['diversity']:.3f} (real test inputs {e['diversity_test']:.3f})"]

    run_scheme_command(
        "data-free", config, ctx.args,
        flags=run_flags(data, root, subset, epochs, seed, lr, batch_size, out),
        scheme={"teacher": teacher, "student": student, "synth": synth, "steps": steps, "method": method, "T": T},
        resume=resume, quiet=quiet, as_json=as_json, lines=lines)
