"""Export a trained student for deployment: ONNX and TorchScript, optionally int8, each checked
against PyTorch on real inputs and timed on CPU.

    from kdlab.export import export
    result = export("runs/kd/best", "deploy/", int8=True, teacher="runs/teacher/best")
    print(result.table())

Files written to the output directory:

* ``model.onnx``: input ``input`` ``[batch, *input_shape]`` float32 (normalised as in
  ``export.json``), output ``logits`` ``[batch, classes]``; batch size is dynamic.
* ``model.pt``: TorchScript (traced); ``torch.jit.load("model.pt")(x)`` returns the logits.
* with ``int8``: ``model_int8.onnx``, *static* post-training quantisation in the QDQ format (int8
  weights per output channel, uint8 activations with ranges calibrated on training samples: the
  U8S8 format ONNX Runtime on x86 runs with its int8 kernels; dynamic quantisation of a CNN runs
  ConvInteger and is slower than fp32 on x86) by kdlab's own BN-folding quantiser, or ONNX Runtime's
  ``quantize_static`` for a model that one cannot prepare; a ``kdlab quantize`` checkpoint exports
  its trained quantisation; ``export.json`` names which (``int8_method``). And ``model_int8.pt``
  (``torch.ao.quantization.quantize_dynamic`` on the Linear layers). Each int8 file is timed against
  its fp32 counterpart: one that is slower or not smaller is reported as such, with the numbers, in
  ``ExportResult.warnings`` and ``export.json`` (``kdlab export`` prints them).
* ``export.json``: the pre-processing from the data source's own raw values (``raw``: what they are;
  ``x = (raw * scale - mean) / std``), class names, input shape, file checksums and the measured table.
"""
from __future__ import annotations

import copy
import json
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from kdlab.errors import ConfigError, IncompatibleError, KDLabError
from kdlab.evaluate.cost import torch_threads
from kdlab.models.contract import as_outputs


class LogitsOnly(nn.Module):
    """``model(x) -> Outputs`` becomes ``model(x) -> logits``: what exporters and deployments want."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return as_outputs(self.model(x)).logits


@dataclass
class Artifact:
    name: str
    path: str | None
    size_kb: float
    latency_b1_ms: float
    latency_batch_ms: float
    acc: float | None = None
    max_abs_diff: float | None = None  # against PyTorch eager logits on the same inputs
    agreement: float | None = None  # top-1 agreement with PyTorch eager
    speedup: float | None = None  # teacher latency (batch 1) / this latency


@dataclass
class ExportResult:
    out_dir: Path
    artifacts: list[Artifact]
    inputs: str  # "N test samples of <data>" or "N random inputs"
    batch: int
    manifest: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # int8 variants that do not pay, with the numbers

    def get(self, name: str) -> Artifact:
        return next(a for a in self.artifacts if a.name == name)

    def table(self) -> str:
        head = (f"{'artifact':<22}{'size KB':>10}{'ms @1':>10}{f'ms @{self.batch}':>11}"
                f"{'top-1':>8}{'max |Δ|':>11}{'agree':>8}{'speed-up @1':>13}")
        lines = [head]
        for a in self.artifacts:
            lines.append(f"{a.name:<22}{a.size_kb:>10.1f}{a.latency_b1_ms:>10.3f}{a.latency_batch_ms:>11.2f}"
                         f"{_pct(a.acc):>8}{_sci(a.max_abs_diff):>11}{_pct(a.agreement):>8}"
                         f"{(f'{a.speedup:.1f}×' if a.speedup else '–'):>13}")
        return "\n".join(lines)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def _sci(v: float | None) -> str:
    return "–" if v is None else f"{v:.2e}"


def _timed(fn: Callable[[], Any], repeats: int, warmup: int = 3, max_seconds: float = 3.0) -> float:
    """Median milliseconds of ``fn()``."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    deadline = time.perf_counter() + max_seconds
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() < deadline):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def _run_batched(fn: Callable[[Tensor], Tensor], x: Tensor, batch: int) -> Tensor:
    return torch.cat([fn(x[i:i + batch]) for i in range(0, len(x), batch)])


@dataclass
class _Inputs:
    x: Tensor  # normalised test inputs [N, *input_shape]
    y: Tensor | None
    described: str
    calib: Tensor | None = None  # normalised training inputs, for static int8 calibration
    raw_scale: float | None = None  # the data source's raw values × raw_scale = the stored inputs
    raw: str = ""


def _inputs(meta: dict[str, Any], data: str | None, n: int, root: str | None, calib: int = 0) -> _Inputs:
    """Real inputs (the test split, normalised as the checkpoint expects), else random ones."""
    name = data or meta.get("data")
    shape = tuple(meta["input_shape"])
    if name:
        try:
            from kdlab.data import data_for_checkpoint

            d = data_for_checkpoint(meta, data, root)  # the recorded data and split unless told otherwise
            s, tr = d.test, d.train
            if "mean" in meta and s.x.dim() == 4:
                from dataclasses import replace

                s = replace(s, mean=torch.tensor(meta["mean"]), std=torch.tensor(meta["std"]))
                tr = replace(tr, mean=s.mean, std=s.std)
            idx = torch.arange(min(n, len(s)))
            if tuple(s.x.shape[1:]) == shape:
                # calibration samples spread over the training split (a fixed, seeded choice)
                cidx = torch.randperm(len(tr), generator=torch.Generator().manual_seed(0))[:calib]
                return _Inputs(s.gather(idx), None if s.y is None else s.y[idx], f"{len(idx)} test samples of {name}",
                               tr.gather(cidx) if calib else None, d.raw_scale, d.raw)
        except KDLabError:
            pass
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *shape, generator=g)
    return _Inputs(x, None, f"{n} random inputs ({name or 'no dataset'} unavailable)", x[:calib] if calib else None)


def quantize_static_onnx(src: str | Path, dst: str | Path, calib: Tensor, per_channel: bool = True,
                         activations: str = "u8") -> None:
    """ONNX Runtime post-training static quantisation of ``src`` into ``dst``: QDQ format, uint8
    activations (``activations="s8"``: int8; MinMax ranges over ``calib`` ``[N, *input_shape]``,
    normalised inputs) and int8 weights (per output channel when ``per_channel``). U8S8 is what ONNX
    Runtime on x86 fuses into its int8 kernels (QLinearConv, QGemm); an S8S8 graph runs there as
    float ops between Dequantize/Quantize nodes (docs/quantization.md)."""
    import logging

    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": calib[i:i + 64].numpy()} for i in range(0, len(calib), 64)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    root_level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing" advice on the root logger
    try:
        act = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}[activations]
        quantize_static(str(src), str(dst), _Reader(), quant_format=QuantFormat.QDQ, activation_type=act,
                        weight_type=QuantType.QInt8, per_channel=per_channel, calibrate_method=CalibrationMethod.MinMax)
    finally:
        logging.getLogger().setLevel(root_level)


def _int8_onnx(model: nn.Module, meta: dict[str, Any], fp32_onnx: Path, dst: Path, calib: Tensor) -> str:
    """Write ``dst``, the int8 ONNX model of a checkpoint; returns how it was made.

    A fake-quantised checkpoint (``kdlab quantize``) exports its own trained ranges. Otherwise
    kdlab's post-training quantisation (BN folded, ranges calibrated on ``calib``; the layout ONNX
    Runtime fuses into QLinearConv/QLinearAdd), and for a model it cannot prepare, ONNX Runtime's
    ``quantize_static``, which on resnet8 left 6 of 9 convolutions in float (docs/quantization.md).
    """
    from kdlab.models.quant import calibrate, prepare_qat

    if meta.get("quant"):
        export_qat_onnx(model, dst, calib)
        return "the checkpoint's own quantisation-aware training (QDQ, U8S8)"
    try:
        q = prepare_qat(model, activations="u8")
    except IncompatibleError:
        quantize_static_onnx(fp32_onnx, dst, calib)
        return "onnxruntime quantize_static (QDQ, U8S8, per-channel, MinMax calibration)"
    calibrate(q, calib.split(128))
    export_qat_onnx(q, dst, calib)
    return "kdlab post-training quantisation (BN folded, QDQ, U8S8, per-channel, MinMax calibration)"


def int8_warnings(rows: list[Artifact], pairs: list[tuple[str, str]]) -> list[str]:
    """One line per int8 artifact that is slower (at batch 1 or at the large batch) or not smaller
    than its fp32 counterpart; ``pairs`` are ``(int8 name, fp32 name)``."""
    by = {r.name: r for r in rows}
    out = []
    for q, f in pairs:
        if q not in by or f not in by:
            continue
        a, b = by[q], by[f]
        worse = []
        if a.latency_b1_ms > b.latency_b1_ms:
            worse.append(f"{a.latency_b1_ms / b.latency_b1_ms:.1f}× slower at batch 1 "
                         f"({a.latency_b1_ms:.3f} vs {b.latency_b1_ms:.3f} ms)")
        if a.latency_batch_ms > b.latency_batch_ms:
            worse.append(f"{a.latency_batch_ms / b.latency_batch_ms:.1f}× slower per large batch "
                         f"({a.latency_batch_ms:.2f} vs {b.latency_batch_ms:.2f} ms)")
        if a.size_kb >= b.size_kb:
            worse.append(f"not smaller ({a.size_kb:.1f} vs {b.size_kb:.1f} KB)")
        if worse:
            out.append(f"{q} does not pay against {f}: " + "; ".join(worse) + " — prefer the fp32 file")
    return out


def _accuracy(logits: Tensor, y: Tensor | None) -> float | None:
    return None if y is None else float((logits.argmax(1) == y).double().mean())


def _ort_session(path: Path, threads: int | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def export(checkpoint: str | Path, out_dir: str | Path, *, int8: bool = False, teacher: str | Path | None = None,
           data: str | None = None, root: str | None = None, samples: int = 1000, batch: int = 64, opset: int = 17,
           threads: int | None = 1, calibration: int = 512) -> ExportResult:
    """Write ONNX + TorchScript (+ int8) of a kdlab checkpoint into ``out_dir``; check and time each.

    threads: CPU threads for every timing, PyTorch and ONNX Runtime alike (default 1: the most
    reproducible number; ``None`` keeps PyTorch's current setting).
    calibration: training samples that calibrate the static int8 activation ranges (with ``int8``).
    """
    with torch_threads(threads):
        return _export(checkpoint, out_dir, int8=int8, teacher=teacher, data=data, root=root, samples=samples,
                       batch=batch, opset=opset, threads=threads or torch.get_num_threads(), calibration=calibration)


def _export(checkpoint: str | Path, out_dir: str | Path, *, int8: bool, teacher: str | Path | None, data: str | None,
            root: str | None, samples: int, batch: int, opset: int, threads: int, calibration: int) -> ExportResult:
    from kdlab.evaluate.cost import size_on_disk_bytes
    from kdlab.models.load import load_model
    from kdlab.store.checkpoint import atomic_write_text, sha256_file

    model, meta = load_model(checkpoint)
    if not meta.get("input_shape"):
        raise ConfigError(f"{checkpoint}: metadata has no input_shape; cannot build an example input")
    if "vocab_size" in (meta.get("model") or {}):  # a text model: its input is a dict of token tensors
        raise IncompatibleError(f"{checkpoint}: model {meta['model'].get('name')!r} takes token ids (input_ids + "
                                "attention_mask); export writes one float input, so text models are not exported yet")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = LogitsOnly(model).eval()
    inp = _inputs(meta, data, samples, root, calib=calibration if int8 else 0)
    x, y, described = inp.x, inp.y, inp.described
    with torch.no_grad():
        ref = _run_batched(net, x, 256)
    x1, xb = x[:1], x[:batch] if len(x) >= batch else x.repeat(-(-batch // len(x)), *[1] * (x.dim() - 1))[:batch]

    def torch_row(name: str, m: nn.Module, path: Path | None, size: int) -> Artifact:
        with torch.no_grad():
            logits = _run_batched(m, x, 256)
            return Artifact(name, str(path) if path else None, size / 1024,
                            _timed(lambda: m(x1), 30), _timed(lambda: m(xb), 10), _accuracy(logits, y),
                            float((logits - ref).abs().max()),
                            float((logits.argmax(1) == ref.argmax(1)).double().mean()))

    def ort_row(name: str, path: Path) -> Artifact:
        sess = _ort_session(path, threads)
        run = lambda a: sess.run(["logits"], {"input": a})[0]  # noqa: E731
        logits = torch.from_numpy(np.concatenate([run(x[i:i + 256].numpy()) for i in range(0, len(x), 256)]))
        a1, ab = x1.numpy(), xb.numpy()
        return Artifact(name, str(path), path.stat().st_size / 1024,
                        _timed(lambda: run(a1), 30), _timed(lambda: run(ab), 10),
                        _accuracy(logits, y), float((logits - ref).abs().max()),
                        float((logits.argmax(1) == ref.argmax(1)).double().mean()))

    rows: list[Artifact] = []
    files: dict[str, str] = {}
    int8_method = ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' deprecation and tracer chatter
        rows.append(torch_row("pytorch (eager)", net,
                              Path(str(checkpoint).removesuffix(".safetensors") + ".safetensors"),
                              size_on_disk_bytes(model)))
        onnx_path = out / "model.onnx"
        torch.onnx.export(net, (x[:2],), str(onnx_path), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                          dynamo=False)
        import onnx

        onnx.checker.check_model(str(onnx_path))
        rows.append(ort_row("onnx (onnxruntime)", onnx_path))
        files["onnx"] = onnx_path.name
        ts_path = out / "model.pt"
        traced = torch.jit.trace(net, x[:2], check_trace=False)
        traced.save(str(ts_path))
        rows.append(torch_row("torchscript", torch.jit.load(str(ts_path)), ts_path, ts_path.stat().st_size))
        files["torchscript"] = ts_path.name
        if int8:
            q_onnx = out / "model_int8.onnx"
            assert inp.calib is not None
            int8_method = _int8_onnx(model, meta, onnx_path, q_onnx, inp.calib)
            rows.append(ort_row("onnx int8", q_onnx))
            files["onnx_int8"] = q_onnx.name
            q_net = torch.ao.quantization.quantize_dynamic(copy.deepcopy(net), {nn.Linear}, dtype=torch.qint8)
            q_ts = out / "model_int8.pt"
            torch.jit.trace(q_net, x[:2], check_trace=False).save(str(q_ts))
            rows.append(torch_row("torchscript int8", torch.jit.load(str(q_ts)), q_ts, q_ts.stat().st_size))
            files["torchscript_int8"] = q_ts.name
        if teacher is not None:
            t_model, t_meta = load_model(teacher)
            t_inp = _inputs(t_meta, data or meta.get("data"), samples, root)
            tx, ty = t_inp.x, t_inp.y
            t_net = LogitsOnly(t_model).eval()
            with torch.no_grad():
                t_logits = _run_batched(t_net, tx, 256)
                t1, tb = tx[:1], tx[:batch] if len(tx) >= batch else xb
                rows.insert(0, Artifact("teacher (eager)", str(teacher), size_on_disk_bytes(t_model) / 1024,
                                        _timed(lambda: t_net(t1), 30), _timed(lambda: t_net(tb), 10),
                                        _accuracy(t_logits, ty)))
    if teacher is not None:
        ref_ms = rows[0].latency_b1_ms
        for r in rows:
            r.speedup = ref_ms / r.latency_b1_ms if r.latency_b1_ms > 0 else None
    warns = int8_warnings(rows, [("onnx int8", "onnx (onnxruntime)"), ("torchscript int8", "torchscript")])
    # the record must reproduce the model's inputs from the source's own raw values: the stored
    # inputs are raw × raw_scale (digits: /16), and the pipeline multiplies those by meta's scale
    raw_scale = inp.raw_scale if inp.raw_scale is not None else 1.0
    manifest = {
        "source": str(checkpoint), "model": meta.get("model"), "classes": meta.get("classes"),
        "input": {"name": "input", "shape": ["batch", *meta["input_shape"]], "dtype": "float32"},
        "output": {"name": "logits", "shape": ["batch", len(meta.get("classes") or []) or None]},
        "preprocess": {"scale": meta.get("scale", 1.0) * raw_scale, "mean": meta.get("mean"), "std": meta.get("std"),
                       "formula": "x = (raw * scale - mean) / std, per channel",
                       "raw": inp.raw or ("unknown: the data source was not available at export; scale assumes "
                                          "the inputs kdlab stores")},
        "files": {k: {"path": v, "sha256": sha256_file(out / v)} for k, v in files.items()},
        "checked_on": described, "opset": opset, "threads": threads, "latency_batch": batch,
        "results": [asdict(r) for r in rows], "warnings": warns,
        **({"int8_method": int8_method} if int8 else {}),
    }
    atomic_write_text(out / "export.json", json.dumps(manifest, indent=2))
    (out / "export.json").chmod(0o644)
    return ExportResult(out, rows, described, batch, manifest, warns)


def qdq_int8_weights(path: str | Path) -> None:
    """Rewrite a QDQ ONNX model in place so that every weight is stored as int8: each
    ``QuantizeLinear`` whose input is a float initializer (a Conv/Gemm weight fake-quantised in
    training) is computed once and replaced by its int8 initializer, which the ``DequantizeLinear``
    then reads: the layout ``quantize_static`` writes, 4× smaller, and the one ONNX Runtime's QDQ
    fusion needs to pick its int8 kernels. Constant nodes feeding those are read too."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    # Identity of an initializer (the exporter's de-duplication) is the initializer
    for n in g.node:
        if n.op_type == "Identity" and n.input[0] in consts:
            consts[n.output[0]] = consts[n.input[0]]
    keep, new_inits = [], []
    for n in g.node:
        if n.op_type == "QuantizeLinear" and all(i in consts for i in n.input):
            w, scale, zp = (consts[i] for i in n.input[:3])
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            shape = [1] * w.ndim
            if scale.ndim == 1:
                shape[axis] = -1
            q = np.clip(np.rint(w / scale.reshape(shape)) + zp.reshape(shape).astype(np.int32), -128, 127)
            new_inits.append(numpy_helper.from_array(q.astype(np.int8), n.output[0]))
            continue
        keep.append(n)
    used = {i for n in keep for i in n.input} | {o.name for o in g.output}
    # drop what only fed the folded nodes (float weights, their Identity/Constant producers)
    keep = [n for n in keep if n.op_type not in ("Constant", "Identity") or any(o in used for o in n.output)]
    used = {i for n in keep for i in n.input} | {o.name for o in g.output}
    inits = [i for i in g.initializer if i.name in used] + new_inits
    del g.node[:]
    g.node.extend(keep)
    del g.initializer[:]
    g.initializer.extend(inits)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def onnx_export(model: nn.Module, path: str | Path, example: Tensor, opset: int = 17) -> Path:
    """``model`` (``x -> Outputs | logits``, eval mode) as ONNX at ``path``: input ``input``
    ``[batch, *example.shape[1:]]``, output ``logits``, dynamic batch."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer chatter
        torch.onnx.export(LogitsOnly(model).eval(), (example[:2],), str(path), input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=opset, dynamo=False)
    return path


def export_qat_onnx(qat_model: nn.Module, path: str | Path, example: Tensor, opset: int = 17) -> Path:
    """A fake-quantised model (:func:`kdlab.models.quant.prepare_qat`) as a QDQ int8 ONNX model:
    quantisation parameters frozen to constants, weights stored as int8 (:func:`qdq_int8_weights`)."""
    from kdlab.models.quant import freeze

    onnx_export(freeze(qat_model), path, example, opset)
    qdq_int8_weights(path)
    return Path(path)


def ort_logits(path: str | Path, x: Tensor, threads: int = 1, batch: int = 256) -> Tensor:
    """Logits ``[N, K]`` of an ONNX model in ONNX Runtime (CPU) over normalised inputs ``x``."""
    sess = _ort_session(Path(path), threads)
    return torch.from_numpy(np.concatenate([sess.run(["logits"], {"input": x[i:i + batch].numpy()})[0]
                                            for i in range(0, len(x), batch)]))


def ort_latency(paths: dict[str, Path], x: Tensor, batches: tuple[int, ...] = (1, 256), threads: int = 1,
                repeats: int = 15, warmup: int = 3) -> dict[str, dict[int, float]]:
    """Median milliseconds per call of each ONNX model at each batch size; the models are timed in
    interleaved rounds (one call of each per round), so a load change on a shared machine hits
    them alike."""
    sessions = {k: _ort_session(p, threads) for k, p in paths.items()}
    out: dict[str, dict[int, float]] = {k: {} for k in paths}
    for b in batches:
        a = x[:b].numpy() if len(x) >= b else x.repeat(-(-b // len(x)), *[1] * (x.dim() - 1))[:b].numpy()
        for s in sessions.values():
            for _ in range(warmup):
                s.run(["logits"], {"input": a})
        times: dict[str, list[float]] = {k: [] for k in paths}
        for _ in range(repeats):
            for k, s in sessions.items():
                t = time.perf_counter()
                s.run(["logits"], {"input": a})
                times[k].append((time.perf_counter() - t) * 1000)
        for k in paths:
            out[k][b] = statistics.median(times[k])
    return out
