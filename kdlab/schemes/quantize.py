"""Quantised distillation: an int8 student trained with quantisation-aware training (fake quant)
against the fp32 teacher, exported as a QDQ ONNX model that ONNX Runtime runs with its int8 kernels.

Polino et al., "Model compression via distillation and quantization" (ICLR 2018): the quantised
student learns from the full-precision teacher's soft targets. Fake quantisation with the
straight-through estimator as in Jacob et al. (CVPR 2018); layout and rationale in
:mod:`kdlab.models.quant` and docs/quantization.md.

Stages (each a run of the one lifecycle, same run-directory layout):

1. ``fp32/``: the fp32 student, distilled from the teacher (labels alone without a teacher) for
   ``train.epochs``; skipped when ``student`` is a checkpoint.
2. post-training quantisation (no training): BatchNorm folded, activation ranges calibrated on
   ``calibration`` training samples; its test accuracy is the PTQ baseline.
3. the top level: quantisation-aware fine-tuning of that calibrated model for ``qat_epochs`` at
   ``qat_lr``, with the same objective and teacher.
4. ``deploy/``: ``model_fp32.onnx`` (the fp32 student), ``model_ptq_int8.onnx`` (stage 2) and
   ``model_int8.onnx`` (stage 3), checked in ONNX Runtime (accuracy, agreement with the PyTorch
   model, size, latency at batch 1 and 256) and recorded in ``deploy/quantized.json``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from kdlab.data import DataSplits
from kdlab.engine.distiller import Distiller
from kdlab.engine.run import Result
from kdlab.evaluate.metrics import classification_metrics, predict
from kdlab.methods import create_method
from kdlab.objective import DEFAULT_METHOD
from kdlab.schemes._common import (
    SchemeContext,
    create_methods,
    is_model_name,
    model_name,
    objective,
    register_scheme,
)
from kdlab.spec import Spec


class QuantizeOptions(Spec):
    """``scheme:`` options of ``kdlab quantize``."""

    student: str = "cnn_small"  # a model name (trained in fp32 first, stage fp32/) or an fp32 checkpoint
    teacher: str | None = None  # the fp32 teacher (checkpoint, model-zoo path); null: labels alone (QAT alone)
    method: str | list[str | dict[str, Any]] = DEFAULT_METHOD  # distillation objective with a teacher
    alpha: float | None = 0.9  # weight of the distillation term; CE gets 1 − alpha
    T: float | None = 4.0  # temperature of the distillation term
    qat_epochs: int = Field(3, ge=1)  # quantisation-aware fine-tuning epochs
    # its learning rate: with BatchNorm folded nothing renormalises the weights, and KD's larger
    # gradients made resnet8 diverge at 0.005 (loss 0.07 -> 30 in 10 steps); 0.001 and 0.0003 were stable
    qat_lr: float = Field(0.0005, gt=0)
    activations: Literal["u8", "s8"] = "u8"  # int8 activation type (u8: what ONNX Runtime on x86 accelerates)
    calibration: int = Field(512, ge=1)  # training samples that calibrate the activation ranges
    momentum: float = Field(0.01, gt=0, le=1)  # EMA of the activation ranges while fine-tuning
    export: bool = True  # write and check deploy/ (ONNX fp32, PTQ int8, QAT int8)
    threads: int = Field(1, ge=1)  # ONNX Runtime threads for the deploy/ timings


def _metrics(model: torch.nn.Module, data: DataSplits) -> dict[str, float]:
    s = data.test
    assert s.y is not None
    return classification_metrics(predict(model, s, 512), s.y, data.num_classes)


@register_scheme("quantize", QuantizeOptions)
def quantize(ctx: SchemeContext, opts: QuantizeOptions) -> Result:
    """fp32 student → PTQ baseline → QAT (+KD) int8 student → ONNX int8 export, checked.

    ``Result.extra``: ``fp32`` / ``ptq`` (test acc and macro-F1 of each), ``teacher``,
    ``activations``, and with ``export``: ``deploy`` (per file: size KB, ONNX Runtime accuracy,
    agreement with the PyTorch model it came from, latency ms at batch 1 and 256).
    """
    from kdlab.models.load import load_model
    from kdlab.models.quant import calibrate, prepare_qat

    d = ctx.data
    teacher = ctx.teacher(opts.teacher) if opts.teacher else None
    methods = objective(opts.method, opts.alpha, opts.T) if teacher is not None else [{"name": "ce"}]
    if is_model_name(opts.student):
        fp32 = ctx.run(Distiller(ctx.model(opts.student), teacher, create_methods(methods)), "fp32").student
    else:
        fp32, _ = load_model(opts.student)
    fp32 = fp32.eval()
    fp32_m = _metrics(fp32, d)

    # post-training quantisation: the calibrated starting point of QAT, and its baseline
    qat = prepare_qat(fp32, momentum=opts.momentum, activations=opts.activations)
    g = torch.Generator().manual_seed(ctx.seed)
    rows = torch.randperm(len(d.train), generator=g)[:opts.calibration]
    calib = d.train.gather(rows)
    calibrate(qat, calib.split(128))
    ptq = prepare_qat(fp32, momentum=opts.momentum, activations=opts.activations)
    ptq.load_state_dict(qat.state_dict())
    ptq_m = _metrics(ptq.eval(), d)

    deploy: dict[str, Any] = {}

    def extra() -> dict[str, Any]:
        return {"fp32": {k: fp32_m[k] for k in ("acc", "f1")}, "ptq": {k: ptq_m[k] for k in ("acc", "f1")},
                "teacher": model_name(opts.teacher) if opts.teacher else None, "activations": opts.activations,
                **({"deploy": deploy} if deploy else {})}

    trainable = Distiller(qat, teacher, create_methods(methods) if teacher is not None else [create_method("ce")])
    sched = ctx.schedule.model_copy(update={"epochs": opts.qat_epochs, "lr": opts.qat_lr})
    meta = {"quant": {"bits": 8, "activations": opts.activations, "weights": "s8 per-channel symmetric"}}
    r = ctx.run(trainable, schedule=sched, extra=extra, report_teacher=teacher, meta=meta)
    from kdlab.engine.distributed import is_main

    if opts.export and r.run_dir is not None and is_main():
        deploy.update(export_deploy(r.run_dir / "deploy", fp32, ptq, r.student, d, opts.threads))
        r.extra.update(extra())
        (r.run_dir / "deploy" / "quantized.json").write_text(json.dumps(r.extra, indent=2, default=str))
    return r


def export_deploy(out: Path, fp32: torch.nn.Module, ptq: torch.nn.Module, qat: torch.nn.Module, data: DataSplits,
                  threads: int = 1) -> dict[str, Any]:
    """Write fp32, PTQ-int8 and QAT-int8 ONNX files to ``out`` and check each in ONNX Runtime on the
    test split against the PyTorch model it was exported from."""
    from kdlab.export import export_qat_onnx, onnx_export, ort_latency, ort_logits

    s = data.test
    assert s.y is not None
    x = s.gather(torch.arange(len(s)))
    paths = {"fp32": onnx_export(fp32.eval(), out / "model_fp32.onnx", x),
             "ptq_int8": export_qat_onnx(ptq.eval(), out / "model_ptq_int8.onnx", x),
             "qat_int8": export_qat_onnx(qat.eval(), out / "model_int8.onnx", x)}
    sources = {"fp32": fp32, "ptq_int8": ptq, "qat_int8": qat}
    lat = ort_latency(paths, x, (1, 256), threads)
    res: dict[str, Any] = {}
    with torch.no_grad():
        ref32 = predict(fp32, s, 512).argmax(1)
        for k, p in paths.items():
            logits = ort_logits(p, x, threads)
            mine = predict(sources[k].eval(), s, 512).argmax(1)
            m = classification_metrics(logits, s.y, data.num_classes)
            res[k] = {"path": p.name, "size_kb": p.stat().st_size / 1024, "acc": m["acc"], "f1": m["f1"],
                      "agreement_with_pytorch": float((logits.argmax(1) == mine).double().mean()),
                      "agreement_with_fp32": float((logits.argmax(1) == ref32).double().mean()),
                      "latency_ms": {str(b): v for b, v in lat[k].items()}}
    return res
