"""Model cost: parameters, FLOPs (counted by PyTorch's FlopCounterMode), CPU latency, size on disk."""
from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from kdlab.models.contract import as_outputs


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily run PyTorch with ``n`` intra-op threads (``None``: leave as is)."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _count_cpu_attention() -> None:
    """PyTorch's FLOP counter knows the GPU attention kernels but not the CPU one that
    ``scaled_dot_product_attention`` runs here: give it the same formula (QKᵀ and the weighted sum)."""
    from torch.utils import flop_counter as fc

    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None or op in fc.flop_registry:
        return

    @fc.register_flop_formula(op)
    def _sdpa_cpu(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return fc.sdpa_flop_count(query_shape, key_shape, value_shape)


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass on a single sample (multiply-add = 2 FLOPs; attention included)."""
    from torch.utils.flop_counter import FlopCounterMode

    _count_cpu_attention()

    was = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    # autograd on: in eval mode under no_grad, nn.TransformerEncoderLayer runs a fused kernel whose
    # FLOPs the counter does not see (a ViT's attention and MLP would count as nothing)
    with counter, torch.enable_grad():
        model(torch.zeros(1, *input_shape))
    model.train(was)
    return int(counter.get_total_flops())


@torch.no_grad()
def latency_ms(model: nn.Module, input_shape: tuple[int, ...], batch_size: int = 1, repeats: int = 20,
               warmup: int = 3, max_seconds: float = 5.0) -> float:
    """Median wall time of one forward pass at ``batch_size`` (eval mode, no autograd)."""
    was = model.training
    model.eval()
    x = torch.randn(batch_size, *input_shape)
    for _ in range(warmup):
        as_outputs(model(x))
    times: list[float] = []
    deadline = time.perf_counter() + max_seconds
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() < deadline):
        t = time.perf_counter()
        model(x)
        times.append((time.perf_counter() - t) * 1000)
    model.train(was)
    return statistics.median(times)


def size_on_disk_bytes(model: nn.Module) -> int:
    """Bytes of the safetensors file holding the model's state dict."""
    from safetensors.torch import save

    return len(save({k: v.contiguous() for k, v in model.state_dict().items()}))


@torch.no_grad()
def interleaved_latency_stats(models: list[nn.Module], input_shape: tuple[int, ...], batch_size: int = 1,
                              rounds: int = 15, warmup: int = 2,
                              max_seconds: float = 10.0) -> list[tuple[float, float]]:
    """(median, half the interquartile range) of each model's forward time in ms, timed round-robin
    (one call per model per round) so that load from other processes on shared cores falls on
    every model alike."""
    was = [m.training for m in models]
    for m in models:
        m.eval()
    x = torch.randn(batch_size, *input_shape)
    for m in models:
        for _ in range(warmup):
            m(x)
    times: list[list[float]] = [[] for _ in models]
    deadline = time.perf_counter() + max_seconds
    for r in range(rounds):
        for i, m in enumerate(models):
            t = time.perf_counter()
            m(x)
            times[i].append((time.perf_counter() - t) * 1000)
        if r >= 2 and time.perf_counter() > deadline:
            break
    for m, w in zip(models, was):
        m.train(w)
    out: list[tuple[float, float]] = []
    for ts in times:
        q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
        out.append((statistics.median(ts), (q[2] - q[0]) / 2))
    return out


def architecture_key(model: nn.Module) -> str:
    """Models with the same key have the same architecture (and so the same cost): the registered
    spec when there is one, else the module types and parameter shapes."""
    import json

    spec = getattr(model, "kdlab_spec", None)
    if spec:
        return json.dumps(spec, sort_keys=True, default=str)
    parts = [type(m).__name__ for m in model.modules()]
    parts += [f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items()]
    return "|".join(parts)
