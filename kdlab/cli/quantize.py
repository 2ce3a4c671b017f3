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


@app.command("quantize", context_settings=EXTRA)
def quantize_cmd(ctx: typer.Context,
                 config: Optional[str] = typer.Argument(None, help=H["config"]),
                 student: Optional[str] = typer.Option(None, help="student: model name (trained in fp32 first) or "
                                                       "an fp32 checkpoint (default cnn_small)"),
                 teacher: Optional[str] = typer.Option(None, help="fp32 teacher checkpoint to distill from "
                                                       "(default none: quantisation-aware training alone)"),
                 method: Optional[str] = typer.Option(None, help="distillation method(s), e.g. kd (default)"),
                 alpha: Optional[float] = typer.Option(None, help="distillation weight; CE gets 1 - alpha "
                                                       "(default 0.9)"),
                 T: Optional[float] = typer.Option(None, "--T", help="temperature (default 4)"),
                 qat_epochs: Optional[int] = typer.Option(None, help="quantisation-aware fine-tuning epochs "
                                                          "(default 3)"),
                 qat_lr: Optional[float] = typer.Option(None, help="its learning rate (default 0.0005)"),
                 activations: Optional[str] = typer.Option(None, help="int8 activation type: u8 (default; what "
                                                           "ONNX Runtime on x86 accelerates) or s8"),
                 calibration: Optional[int] = typer.Option(None, help="training samples calibrating the "
                                                           "activation ranges (default 512)"),
                 export: Optional[bool] = typer.Option(None, "--export/--no-export",
                                                       help="write and check deploy/ ONNX files (default on)"),
                 data: Optional[str] = DATA, root: Optional[str] = ROOT,
                 subset: Optional[int] = SUBSET,
                 epochs: Optional[int] = EPOCHS,
                 seed: Optional[int] = SEED, lr: Optional[float] = LR,
                 batch_size: Optional[int] = BATCH_SIZE,
                 out: Optional[str] = OUT,
                 resume: bool = RESUME,
                 quiet: bool = QUIET,
                 as_json: bool = JSON) -> None:
    """Int8 student: fp32 (KD) student, post-training quantisation baseline, quantisation-aware
    fine-tuning (with KD from the fp32 teacher), then a QDQ int8 ONNX model checked and timed in
    ONNX Runtime against fp32 (run directory deploy/). --epochs is the fp32 stage's.

    Examples:

      kdlab quantize --student resnet8 --data digits --epochs 5 --qat-epochs 2

      kdlab quantize --student runs/kd/best --teacher kdlab/assets/teachers/fmnist_resnet56 --data fashion-mnist

      kdlab quantize q.yaml scheme.activations=s8 --out runs/q
    """
    def lines(r: Any) -> list[str]:
        e = r.extra
        out = [f"fp32 student test acc {pct(e['fp32']['acc'])}; post-training int8 {pct(e['ptq']['acc'])}"]
        for k, v in e.get("deploy", {}).items():
            lat = v["latency_ms"]
            out.append(f"{v['path']:<22} {v['size_kb']:8.1f} KB  onnxruntime acc {pct(v['acc'])}  "
                       f"agrees with PyTorch {pct(v['agreement_with_pytorch'])}  "
                       f"{lat['1']:.3f} ms @1  {lat['256']:.2f} ms @256")
        return out

    run_scheme_command(
        "quantize", config, ctx.args,
        flags=run_flags(data, root, subset, epochs, seed, lr, batch_size, out),
        scheme={"student": student, "teacher": teacher, "method": method, "alpha": alpha, "T": T,
                "qat_epochs": qat_epochs, "qat_lr": qat_lr, "activations": activations, "calibration": calibration,
                "export": export},
        resume=resume, quiet=quiet, as_json=as_json, lines=lines)
