from __future__ import annotations

from typing import Optional

import typer

from kdlab.cli.main import app


@app.command("export")
def export_(checkpoint: str = typer.Argument(..., help="a kdlab checkpoint (run/best)"),
            out: str = typer.Option(..., help="output directory"),
            int8: bool = typer.Option(False, "--int8", help="also write int8 variants (ONNX: static QDQ S8S8, "
                                      "calibrated on training samples); each is checked to pay against fp32"),
            teacher: Optional[str] = typer.Option(None, help="teacher checkpoint to time against"),
            data: Optional[str] = typer.Option(None, help="dataset for the check (default: the checkpoint's)"),
            root: Optional[str] = typer.Option(None, help="dataset directory"),
            samples: int = typer.Option(1000, help="test samples used to compare outputs and accuracy"),
            batch: int = typer.Option(64, help="batch size of the second latency column"),
            opset: int = typer.Option(17, help="ONNX opset"),
            threads: int = typer.Option(1, help="CPU threads for the timings (PyTorch and ONNX Runtime)"),
            calibration: int = typer.Option(512, help="training samples calibrating the int8 activation ranges")
            ) -> None:
    """Export a student for deployment: ONNX (checked in ONNX Runtime against PyTorch on real test
    inputs; max absolute logit difference reported) and TorchScript, optionally int8; prints size
    and CPU latency of each, and of the teacher. Writes export.json with the pre-processing.

    Examples:

      kdlab export runs/kd/best --out deploy

      kdlab export runs/kd/best --out deploy --int8 --teacher runs/teacher/best
    """
    from kdlab.export import export

    r = export(checkpoint, out, int8=int8, teacher=teacher, data=data, root=root, samples=samples, batch=batch,
               opset=opset, threads=threads, calibration=calibration)
    typer.echo(f"checked on {r.inputs}; CPU latency is the median wall time ({r.manifest['threads']} thread(s))")
    typer.echo(r.table())
    worst = max(a.max_abs_diff or 0.0 for a in r.artifacts if "int8" not in a.name)
    typer.echo(f"max |ONNX/TorchScript − PyTorch| over the logits: {worst:.2e}")
    if r.manifest.get("int8_method"):
        typer.echo(f"int8 ONNX: {r.manifest['int8_method']}")
    for w in r.warnings:
        typer.echo(f"warning: {w}")
    typer.echo(f"written to {r.out_dir}: " + ", ".join(f["path"] for f in r.manifest["files"].values())
               + ", export.json")
