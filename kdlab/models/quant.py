"""Static int8 quantisation-aware training (fake quantisation) of a kdlab model, in the layout that
ONNX Runtime runs with its int8 kernels.

Krishnamoorthi, "Quantizing deep convolutional networks for efficient inference: A whitepaper"
(arXiv:1806.08342, 2018); Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference" (CVPR 2018). Gradients pass the rounding with the straight-through
estimator, zero outside the clipping range (PyTorch's ``fake_quantize_*`` kernels).

    qat = prepare_qat(model)          # BN folded, weights and activations fake-quantised
    calibrate(qat, batches)           # activation ranges from a few batches (the PTQ starting point)
    ...train qat...                   # its forward is model(x) -> logits [B, K]

Scheme (U8S8 by default, S8S8 on request; ``onnxruntime.quantization.quantize_static``'s QDQ format):

* weights of every Conv2d / Linear: int8, symmetric, one scale per output channel (``|w|max / 127``);
* activations: uint8 (``activations="s8"``: int8), asymmetric, one scale per tensor, range an
  exponential moving average of the batch min/max while training (frozen in eval mode), always
  containing 0;
* BatchNorm is folded into the preceding convolution first (frozen statistics, the usual QAT
  fine-tuning setting), so the quantised weight is the one deployed;
* an activation is quantised where ONNX Runtime wants a QuantizeLinear: the input, the output of
  every Conv/Linear, residual add and average pool, except where the only consumer is a ReLU (then
  after the ReLU, which ONNX Runtime folds into the preceding int8 op). Max-pool and flatten keep
  their input's quantisation. The logits stay float.

The exported ONNX graph (``torch.onnx.export`` of the prepared model) carries QuantizeLinear /
DequantizeLinear pairs; :func:`kdlab.export.qdq_int8_weights` stores the weights as int8.
"""
from __future__ import annotations

import copy
import operator
from typing import Any, Callable, Iterable, cast

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from kdlab.errors import IncompatibleError
from kdlab.models.contract import as_outputs

QMIN, QMAX = -128, 127  # int8 (weights)
# activations: uint8 (U8S8) by default, since ONNX Runtime builds for x86 fuse QDQ groups into its
# int8 kernels only for uint8 activations (QDQIsInt8Allowed() is false off ARM): an S8S8 graph stays
# float Conv between Dequantize/Quantize nodes there, slower than fp32 (docs/quantization.md)
ACT_RANGE = {"u8": (0, 255), "s8": (-128, 127)}


def quant_params(lo: Tensor, hi: Tensor, qmin: int = QMIN, qmax: int = QMAX) -> tuple[Tensor, Tensor]:
    """Asymmetric per-tensor (scale ``[]`` float32, zero point ``[]`` int32) for the range [lo, hi],
    widened to contain 0 so that 0 (padding, ReLU) is exact."""
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    scale = torch.clamp((hi - lo) / (qmax - qmin), min=1e-8)
    zp = torch.clamp(torch.round(qmin - lo / scale), qmin, qmax).to(torch.int32)
    return scale.float(), zp


def weight_scales(w: Tensor, qmax: int = QMAX) -> Tensor:
    """Symmetric per-output-channel scales ``[C_out]`` of a weight ``[C_out, ...]``: ``|w|max / 127``."""
    return torch.clamp(w.detach().abs().flatten(1).amax(1) / qmax, min=1e-8)


def fake_quant_weight(w: Tensor, scales: Tensor | None = None) -> Tensor:
    """``w`` rounded to int8 per output channel and back (straight-through gradient); ``scales``
    ``[C_out]`` fixed ones (a frozen model), else :func:`weight_scales` of ``w``."""
    s = weight_scales(w) if scales is None else scales
    return torch.fake_quantize_per_channel_affine(w, s, torch.zeros_like(s, dtype=torch.int32), 0, QMIN, QMAX)


class ActFakeQuant(nn.Module):
    """Per-tensor int8 fake quantisation of an activation ``[B, ...]``; the range is an exponential
    moving average (``momentum``) of batch min/max in training mode, fixed in eval mode. The first
    observed batch sets it outright."""

    lo: Tensor
    hi: Tensor
    seen: Tensor

    def __init__(self, momentum: float = 0.01, dtype: str = "u8") -> None:
        super().__init__()
        self.momentum = momentum
        self.qmin, self.qmax = ACT_RANGE[dtype]
        self.register_buffer("lo", torch.tensor(0.0))
        self.register_buffer("hi", torch.tensor(0.0))
        self.register_buffer("seen", torch.tensor(False))
        self.observe = True  # switched off to freeze the range while training
        self.frozen: tuple[Tensor, Tensor] | None = None  # (scale, zero point) constants for export

    def forward(self, x: Tensor) -> Tensor:
        if self.frozen is not None:
            return torch.fake_quantize_per_tensor_affine(x, self.frozen[0], self.frozen[1], self.qmin, self.qmax)
        if self.training and self.observe:
            with torch.no_grad():
                lo, hi = x.detach().min().float(), x.detach().max().float()
                if not bool(self.seen):
                    self.lo.copy_(lo)
                    self.hi.copy_(hi)
                    self.seen.fill_(True)
                else:
                    self.lo.lerp_(lo, self.momentum)
                    self.hi.lerp_(hi, self.momentum)
        scale, zp = quant_params(self.lo, self.hi, self.qmin, self.qmax)
        return torch.fake_quantize_per_tensor_affine(x, scale, zp, self.qmin, self.qmax)


class QConv2d(nn.Conv2d):
    """A Conv2d whose weight is fake-quantised to int8 per output channel."""

    w_scales: Tensor | None = None  # set by freeze(): constant scales for export

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, fake_quant_weight(self.weight, self.w_scales), self.bias)


class QLinear(nn.Linear):
    """A Linear whose weight is fake-quantised to int8 per output feature."""

    w_scales: Tensor | None = None  # set by freeze()

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, fake_quant_weight(self.weight, self.w_scales), self.bias)


def freeze(model: nn.Module) -> nn.Module:
    """A copy of a prepared model, in eval mode, whose quantisation parameters are constants (what
    an exporter should see: QuantizeLinear/DequantizeLinear with fixed scales). Same outputs."""
    m = copy.deepcopy(model).eval()
    for mod in m.modules():
        if isinstance(mod, (QConv2d, QLinear)):
            mod.w_scales = weight_scales(mod.weight)
        elif isinstance(mod, ActFakeQuant):
            mod.frozen = quant_params(mod.lo, mod.hi, mod.qmin, mod.qmax)
    return m


class _LogitsOnly(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return as_outputs(self.model(x)).logits


def _is_relu(n: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if n.op == "call_module":
        return isinstance(modules[str(n.target)], nn.ReLU)
    return (n.op == "call_function" and n.target in (F.relu, torch.relu)) or (n.op == "call_method"
                                                                              and n.target == "relu")


def _quantised_output(n: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``n`` produces a tensor that ONNX Runtime should see quantised."""
    if n.op == "placeholder":
        return True
    if n.op == "call_module":
        return isinstance(modules[str(n.target)], (nn.Conv2d, nn.Linear, nn.ReLU, nn.AdaptiveAvgPool2d,
                                                   nn.AvgPool2d))
    if n.op == "call_function":
        return n.target in (operator.add, torch.add, F.relu, torch.relu, F.adaptive_avg_pool2d, F.avg_pool2d)
    return n.op == "call_method" and n.target in ("relu", "add")


SUPPORTED = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.AvgPool2d,
             nn.Dropout, nn.Identity, nn.Flatten)


def prepare_qat(model: nn.Module, momentum: float = 0.01, activations: str = "u8") -> fx.GraphModule:
    """A copy of ``model`` as a traced ``x [B, C, H, W] -> logits [B, K]`` module with BN folded,
    Conv2d/Linear replaced by :class:`QConv2d`/:class:`QLinear` and :class:`ActFakeQuant` inserted
    (see the module docstring). Raises IncompatibleError for a model it cannot trace or holding a
    layer it does not quantise (e.g. attention, depthwise-only families are fine: they are Conv2d)."""
    from torch.fx.experimental.optimization import fuse

    net = _LogitsOnly(copy.deepcopy(model)).eval()
    for name, m in net.named_modules():
        if len(list(m.children())) == 0 and not isinstance(m, SUPPORTED):
            raise IncompatibleError(f"cannot quantise layer {name!r} ({type(m).__name__}); int8 QAT supports "
                                    "conv/linear/batch-norm/ReLU/pooling models (cnn_*, resnet*, vgg*, wrn*)")
    try:
        gm = cast(fx.GraphModule, fuse(net))  # folds every Conv2d -> BatchNorm2d pair (eval-mode statistics)
    except Exception as e:  # fx raises many types on untraceable Python
        raise IncompatibleError(f"cannot trace {type(model).__name__} for quantisation: {type(e).__name__}: {e}") \
            from None
    modules = dict(gm.named_modules())
    for n in list(gm.graph.nodes):  # swap the weighted layers for weight-quantised ones
        if n.op == "call_module":
            m = modules[str(n.target)]
            if isinstance(m, nn.BatchNorm2d):
                raise IncompatibleError(f"BatchNorm {n.target!r} does not follow a convolution; cannot fold it")
            if type(m) is nn.Conv2d:
                _replace(gm, str(n.target), _as(QConv2d, m))
            elif type(m) is nn.Linear:
                _replace(gm, str(n.target), _as(QLinear, m))
    modules = dict(gm.named_modules())
    count = 0
    for n in list(gm.graph.nodes):
        if not _quantised_output(n, modules):
            continue
        users = list(n.users)
        if users and all(_is_relu(u, modules) for u in users):
            continue  # quantised after the ReLU instead
        if any(u.op == "output" for u in users):
            continue  # the logits stay float
        name = f"act_fq{count}"
        count += 1
        gm.add_submodule(name, ActFakeQuant(momentum, activations))
        with gm.graph.inserting_after(n):
            q = gm.graph.call_module(name, (n,))
        n.replace_all_uses_with(q, delete_user_cb=lambda u: u is not q)
    gm.graph.lint()
    gm.recompile()
    gm.kdlab_spec = getattr(model, "kdlab_spec", None)  # type: ignore[assignment]
    return gm


def _as(cls: type[nn.Module], m: nn.Module) -> nn.Module:
    q = copy.deepcopy(m)
    q.__class__ = cls
    return q


def _replace(gm: fx.GraphModule, target: str, new: nn.Module) -> None:
    parent, _, leaf = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, leaf, new)


def act_quantizers(model: nn.Module) -> list[ActFakeQuant]:
    return [m for m in model.modules() if isinstance(m, ActFakeQuant)]


def set_observe(model: nn.Module, observe: bool) -> None:
    """Let the activation ranges follow the data (True) or freeze them (False)."""
    for m in act_quantizers(model):
        m.observe = observe


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[Tensor], forward: Callable[[Tensor], Any] | None = None) -> None:
    """Set every activation range from ``batches`` (``[B, C, H, W]`` normalised inputs): the running
    min/max over all of them (momentum 1 on the extremes), as post-training calibration does."""
    was = model.training
    model.train()
    qs = act_quantizers(model)
    saved = [(q.momentum, q.observe) for q in qs]
    for q in qs:
        q.seen.fill_(False)
        q.observe = True
    lo: list[Tensor] = []
    hi: list[Tensor] = []
    for q in qs:
        q.momentum = 1.0  # each batch's own range; the extremes are kept below
    for i, x in enumerate(batches):
        (forward or model)(x)
        if i == 0:
            lo, hi = [q.lo.clone() for q in qs], [q.hi.clone() for q in qs]
        else:
            lo = [torch.minimum(a, q.lo) for a, q in zip(lo, qs)]
            hi = [torch.maximum(a, q.hi) for a, q in zip(hi, qs)]
    for q, a, b in zip(qs, lo, hi):
        q.lo.copy_(a)
        q.hi.copy_(b)
    for q, (mom, obs) in zip(qs, saved):
        q.momentum, q.observe = mom, obs
    model.train(was)
