"""Faster inference passes for a frozen teacher: when building a cache, and for a live teacher.

* ``fold_bn``: a copy of the module with every BatchNorm folded into the convolution before it
  (inside ``nn.Sequential`` conv→BN pairs, and ``convN``/``bnN`` sibling pairs), run without
  autograd.
* ``onnx``: the module exported to ONNX (only the logits and the requested features) and run in
  ONNX Runtime with the same number of threads as torch (ONNX Runtime folds BatchNorm itself).

:func:`accelerated` never trusts a pass blindly: it runs the eager teacher and the candidate on a
sample batch (its first 64 inputs) and keeps the candidate only if logits and features agree (relative tolerance 1e-3
of the output's scale); otherwise it says so and falls back to the eager teacher.
"""
from __future__ import annotations

import copy
import io
import warnings
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from kdlab.core import Batch, Outputs, Teacher
from kdlab.models.contract import as_outputs

MODES = ("auto", "eager", "onnx", "fold_bn")


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    mean, var = bn.running_mean, bn.running_var
    assert mean is not None and var is not None  # only BatchNorms that track running stats are folded
    scale = bn.weight.detach() if bn.affine else torch.ones_like(var)
    shift = bn.bias.detach() if bn.affine else torch.zeros_like(mean)
    inv = scale / torch.sqrt(var + bn.eps)
    with torch.no_grad():
        conv.weight.mul_(inv.view(-1, *([1] * (conv.weight.dim() - 1))))
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(mean)
        new_bias = (bias - mean) * inv + shift
        if conv.bias is None:
            conv.bias = nn.Parameter(new_bias, requires_grad=False)
        else:
            conv.bias.copy_(new_bias)


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """A copy of ``module`` (eval mode) with BatchNorm layers folded into the preceding convs."""
    m = copy.deepcopy(module).eval()
    pairs: list[tuple[nn.Module, nn.Conv2d, str]] = []
    for parent in m.modules():
        children = list(parent.named_children())
        cands: list[tuple[nn.Module | None, str, nn.Module]]
        if isinstance(parent, nn.Sequential):
            cands = [(c1, n2, c2) for (_n1, c1), (n2, c2) in zip(children, children[1:])]
        else:
            named = dict(children)
            cands = [(named.get("conv" + n[2:]), n, c) for n, c in children if n.startswith("bn")]
        for conv, bn_name, bn in cands:
            if (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats
                    and conv.out_channels == bn.num_features):
                pairs.append((parent, conv, bn_name))
    for parent, conv, bn_name in pairs:
        _fold(conv, getattr(parent, bn_name))
        setattr(parent, bn_name, nn.Identity())
    for p in m.parameters():
        p.requires_grad_(False)
    return m


class _ModuleRunner:
    def __init__(self, module: nn.Module, transform: Callable | None) -> None:
        self.module, self.transform = module, transform

    def __call__(self, batch: Batch) -> Outputs:
        x = batch.inputs if self.transform is None else self.transform(batch.inputs)
        # no_grad, not inference_mode: a live teacher's outputs are saved by the loss's backward
        with torch.no_grad():
            return as_outputs(self.module(x))


class _Export(nn.Module):
    def __init__(self, module: nn.Module, features: Sequence[str]) -> None:
        super().__init__()
        self.module, self.features = module, list(features)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        o = as_outputs(self.module(x))
        return (o.logits, *(o.features[f] for f in self.features))


class OnnxRunner:
    """The teacher's module in ONNX Runtime: ``(batch) -> Outputs`` with the requested features."""

    def __init__(self, module: nn.Module, sample: Tensor, features: Sequence[str] = (),
                 transform: Callable | None = None, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.features, self.transform = list(features), transform
        buf = io.BytesIO()
        was = module.training
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # the exporter restores the wrapper's mode afterwards: it must be eval too; the
                # TorchScript exporter (dynamo=False) writes to a file object too, which torch's
                # annotation of ``f`` (str | PathLike | None) leaves out
                torch.onnx.export(_Export(module, self.features).eval(), (sample,),
                                  buf,  # type: ignore[arg-type]
                                  input_names=["x"], output_names=["logits", *self.features], opset_version=17,
                                  dynamo=False, dynamic_axes={"x": {0: "batch"}})
        finally:
            module.train(was)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])

    def __call__(self, batch: Batch) -> Outputs:
        x = batch.inputs if self.transform is None else self.transform(batch.inputs)
        assert isinstance(x, Tensor)  # built only for tensor inputs (see accelerated)
        out = self.session.run(None, {"x": x.detach().cpu().float().numpy()})
        t = [torch.from_numpy(o) for o in out]
        return Outputs(t[0], dict(zip(self.features, t[1:])))


def _agree(a: Outputs, ref: Outputs, features: Sequence[str], rtol: float = 1e-3) -> float | None:
    """None when ``a`` matches ``ref``; else the worst relative difference."""
    worst = 0.0
    for x, y in [(a.logits, ref.logits), *((a.features[f], ref.features[f]) for f in features)]:
        if x.shape != y.shape:
            return float("inf")
        scale = float(y.abs().max().clamp_min(1.0))
        worst = max(worst, float((x.float() - y.float()).abs().max()) / scale)
    return None if worst <= rtol else worst


def accelerated(teacher: Teacher, sample: Batch, mode: str = "auto", features: Sequence[str] = (),
                log: Callable[[str], None] | None = None) -> tuple[Callable[[Batch], Outputs], str]:
    """``(runner, mode used)``. ``auto`` tries ONNX Runtime, then BatchNorm folding; teachers that
    are not a module wrapper (no ``.module``), or on a non-CPU device, run eagerly."""
    if mode not in MODES:
        from kdlab.errors import ConfigError

        raise ConfigError(f"unknown teacher acceleration {mode!r} ({', '.join(MODES)})")
    log = log or (lambda _m: None)
    module = getattr(teacher, "module", None)
    x = sample.inputs
    if mode == "eager" or not isinstance(module, nn.Module) or not isinstance(x, Tensor) or x.device.type != "cpu":
        return teacher, "eager"
    transform = getattr(teacher, "input_transform", None)
    x = x[:64]
    sample = Batch(x, None if sample.targets is None else sample.targets[:64],
                   None if sample.index is None else sample.index[:64],
                   None if sample.view is None else sample.view[:64])
    ref = teacher(sample)
    for cand in (("onnx", "fold_bn") if mode == "auto" else (mode,)):
        try:
            if cand == "onnx":
                xt = x if transform is None else transform(x)
                runner: Callable[[Batch], Outputs] = OnnxRunner(module, xt, features, transform)
            else:
                runner = _ModuleRunner(fold_batchnorm(module), transform)
            worst = _agree(runner(sample), ref, features)
        except Exception as e:  # an export or runtime that cannot take this model
            log(f"teacher pass {cand!r} unavailable ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                f"trying the next")
            continue
        if worst is None:
            return runner, cand
        log(f"teacher pass {cand!r} disagrees with the eager teacher (max relative difference {worst:.2e}); "
            f"not used")
    return teacher, "eager"


class AcceleratedTeacher:
    """A live teacher whose forward runs in a faster pass (checked against eager by
    :func:`accelerated`); fingerprint, module and transform stay the original teacher's, and
    moving it to another device returns the original (the passes here are CPU-only)."""

    def __init__(self, teacher: Teacher, runner: Callable[[Batch], Outputs], mode: str) -> None:
        self.teacher, self.runner, self.mode = teacher, runner, mode
        self.module = getattr(teacher, "module", None)
        self.input_transform = getattr(teacher, "input_transform", None)

    def __call__(self, batch: Batch) -> Outputs:
        return self.runner(batch)

    def to(self, device: torch.device | str) -> Teacher:
        if torch.device(device).type == "cpu":
            return self
        return self.teacher.to(device) if hasattr(self.teacher, "to") else self.teacher


def features_needed(needs: Sequence[frozenset[str]], available: Sequence[str]) -> list[str] | None:
    """Teacher features the methods read (``needs`` of each method), or None when one of them is
    not among ``available`` (then the eager teacher runs, and the method reports it)."""
    want: set[str] = set()
    for n in needs:
        for item in n:
            if item == "features:*":
                want |= set(available)
            elif item != "logits":
                want.add(item)
    return sorted(want) if want <= set(available) else None


def accelerate_live(teacher: Teacher, sample: Batch, needs: Sequence[frozenset[str]], mode: str = "auto",
                    log: Callable[[str], None] | None = None) -> Teacher:
    """``teacher`` run through the fastest pass that agrees with it (:func:`accelerated`), exporting
    only the features the methods need; the teacher itself when no pass applies or ``mode`` is eager."""
    if mode == "eager" or getattr(teacher, "module", None) is None:
        return teacher
    try:
        with torch.no_grad():
            feats = features_needed(needs, list(teacher(sample).features))
    except (RuntimeError, ValueError, TypeError, IndexError):
        return teacher  # a teacher that cannot take these inputs: the Distiller's check names the problem
    if feats is None:
        return teacher
    runner, used = accelerated(teacher, sample, mode, features=feats, log=log)
    return teacher if used == "eager" else AcceleratedTeacher(teacher, runner, used)
