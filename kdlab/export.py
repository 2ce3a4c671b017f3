"""Export a trained student for deployment: ONNX and TorchScript, optionally int8, each checked
against PyTorch on real inputs and timed on CPU.

    from kdlab.export import export
    result = export("runs/kd/best", "deploy/", int8=True, teacher="runs/teacher/best")
    print(result.table())

Files written to the output directory:

* ``model.onnx``: input ``input`` ``[batch, *input_shape]`` float32 (normalised as in
  ``export.json``), output ``logits`` ``[batch, classes]``; batch size is dynamic.
* ``model.pt``: TorchScript (traced); ``torch.jit.load("model.pt")(x)`` returns the logits.
* with ``int8``: ``model_int8.onnx`` (ONNX Runtime dynamic quantisation: int8 weights, activations
  quantised on the fly) and ``model_int8.pt`` (``torch.ao.quantization.quantize_dynamic`` on the
  Linear layers).
* ``export.json``: the pre-processing (scale, mean, std), class names, input shape, file checksums
  and the measured table.
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


def _inputs(meta: dict[str, Any], data: str | None, n: int, root: str | None) -> tuple[Tensor, Tensor | None, str]:
    """Real inputs (the test split, normalised as the checkpoint expects), else random ones."""
    name = data or meta.get("data")
    shape = tuple(meta["input_shape"])
    if name:
        try:
            from kdlab.data import data_for_checkpoint

            d = data_for_checkpoint(meta, data, root)  # the recorded data and split unless told otherwise
            s = d.test
            if "mean" in meta and s.x.dim() == 4:
                from dataclasses import replace

                s = replace(s, mean=torch.tensor(meta["mean"]), std=torch.tensor(meta["std"]))
            idx = torch.arange(min(n, len(s)))
            if tuple(s.x.shape[1:]) == shape:
                return s.gather(idx), None if s.y is None else s.y[idx], f"{len(idx)} test samples of {name}"
        except KDLabError:
            pass
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, *shape, generator=g), None, f"{n} random inputs ({name or 'no dataset'} unavailable)"


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
           threads: int | None = 1) -> ExportResult:
    """Write ONNX + TorchScript (+ int8) of a kdlab checkpoint into ``out_dir``; check and time each.

    threads: CPU threads for every timing, PyTorch and ONNX Runtime alike (default 1: the most
    reproducible number; ``None`` keeps PyTorch's current setting).
    """
    with torch_threads(threads):
        return _export(checkpoint, out_dir, int8=int8, teacher=teacher, data=data, root=root, samples=samples,
                       batch=batch, opset=opset, threads=threads or torch.get_num_threads())


def _export(checkpoint: str | Path, out_dir: str | Path, *, int8: bool, teacher: str | Path | None, data: str | None,
            root: str | None, samples: int, batch: int, opset: int, threads: int) -> ExportResult:
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
    x, y, described = _inputs(meta, data, samples, root)
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
            from onnxruntime.quantization import QuantType, quantize_dynamic

            q_onnx = out / "model_int8.onnx"
            import logging

            root_level = logging.getLogger().level
            logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing" advice on the root logger
            try:
                quantize_dynamic(str(onnx_path), str(q_onnx), weight_type=QuantType.QInt8)
            finally:
                logging.getLogger().setLevel(root_level)
            rows.append(ort_row("onnx int8", q_onnx))
            files["onnx_int8"] = q_onnx.name
            q_net = torch.ao.quantization.quantize_dynamic(copy.deepcopy(net), {nn.Linear}, dtype=torch.qint8)
            q_ts = out / "model_int8.pt"
            torch.jit.trace(q_net, x[:2], check_trace=False).save(str(q_ts))
            rows.append(torch_row("torchscript int8", torch.jit.load(str(q_ts)), q_ts, q_ts.stat().st_size))
            files["torchscript_int8"] = q_ts.name
        if teacher is not None:
            t_model, t_meta = load_model(teacher)
            tx, ty, _ = _inputs(t_meta, data or meta.get("data"), samples, root)
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
    manifest = {
        "source": str(checkpoint), "model": meta.get("model"), "classes": meta.get("classes"),
        "input": {"name": "input", "shape": ["batch", *meta["input_shape"]], "dtype": "float32"},
        "output": {"name": "logits", "shape": ["batch", len(meta.get("classes") or []) or None]},
        "preprocess": {"scale": meta.get("scale", 1.0), "mean": meta.get("mean"), "std": meta.get("std"),
                       "formula": "x = (raw * scale - mean) / std, per channel"},
        "files": {k: {"path": v, "sha256": sha256_file(out / v)} for k, v in files.items()},
        "checked_on": described, "opset": opset, "threads": threads, "latency_batch": batch,
        "results": [asdict(r) for r in rows],
    }
    atomic_write_text(out / "export.json", json.dumps(manifest, indent=2))
    (out / "export.json").chmod(0o644)
    return ExportResult(out, rows, described, batch, manifest)
