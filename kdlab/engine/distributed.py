"""Multi-process data-parallel training on ``torch.distributed``.

Launch with ``torchrun``, which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` for every process::

    torchrun --nproc-per-node 2 -m kdlab distill --teacher runs/t/best --student resnet20 --data cifar10

Each process joins one process group (``gloo`` on CPU, ``nccl`` when CUDA is available: one GPU per
process, ``cuda:LOCAL_RANK``). The trainable (student + the methods' connectors) is wrapped in
:class:`~torch.nn.parallel.DistributedDataParallel`; the teacher is held outside its module tree, so
it is never wrapped, synchronised or saved. Every rank reads its own ``1/world_size`` of each global
batch (:class:`kdlab.data.Loader` with ``rank``/``world_size``), gradients are averaged by DDP, the
epoch's training metrics are summed across ranks, and only rank 0 writes files.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import nn

from kdlab.errors import ConfigError


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job. ``world_size == 1``: plain single-process training."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None
    owns_group: bool = False  # this module initialised the process group (and shuts it down)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _int_env(environ: Mapping[str, str], key: str, default: int) -> int:
    value = environ.get(key)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {key}={value!r} is not an integer") from None


def env_from(environ: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's variables (``(0, 1, 0)`` without them)."""
    environ = os.environ if environ is None else environ
    rank = _int_env(environ, "RANK", 0)
    world = _int_env(environ, "WORLD_SIZE", 1)
    local = _int_env(environ, "LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ConfigError(f"inconsistent distributed environment: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}")
    return rank, world, local


def init(backend: str | None = None, timeout_s: float | None = None) -> DistEnv:
    """Join the process group described by the environment (torchrun), or describe a single process.

    backend: ``gloo`` or ``nccl``; default ``nccl`` when CUDA is available, else ``gloo``.
    Returns the rank, world size and the device this process trains on. Calling it again, or after
    the caller initialised the group itself, reuses the existing group.
    """
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        _, _, local = env_from()
        be = dist.get_backend()
        return DistEnv(rank, world, local, _device(be, local), be, owns_group=False)
    rank, world, local = env_from()
    if world == 1:
        return DistEnv()
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    backend = backend or os.environ.get("KDLAB_DIST_BACKEND") or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend not in ("gloo", "nccl"):
        raise ConfigError(f"unknown distributed backend {backend!r} (gloo, nccl)")
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise ConfigError("backend nccl needs CUDA; use gloo on CPU")
        torch.cuda.set_device(local)
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(key):
            raise ConfigError(f"WORLD_SIZE={world} but {key} is not set: launch with torchrun "
                              "(see docs/distributed.md)")
    kwargs: dict[str, Any] = {"backend": backend, "rank": rank, "world_size": world}
    if timeout_s is not None:
        kwargs["timeout"] = timedelta(seconds=timeout_s)
    if backend == "nccl":
        kwargs["device_id"] = torch.device("cuda", local)
    dist.init_process_group(**kwargs)
    env = DistEnv(rank, world, local, _device(backend, local), backend, owns_group=True)
    atexit.register(shutdown, env)
    return env


def _device(backend: str | None, local_rank: int) -> torch.device:
    return torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")


def shutdown(env: DistEnv) -> None:
    """Leave the process group if :func:`init` created it, after every rank got here: a rank that
    tears its gloo pairs down while a peer still talks to it can abort the peer ("terminate called
    without an active exception"). The wait is bounded: a peer that died is not waited for."""
    if env.owns_group and dist.is_available() and dist.is_initialized():
        try:
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=timedelta(seconds=60))
            else:
                dist.barrier()
        except RuntimeError:
            pass  # a peer is gone: leave anyway (torchrun reports the failed rank)
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main() -> bool:
    """True on rank 0, and in a single process."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def wrap(module: nn.Module, device: torch.device | str = "cpu",
         find_unused_parameters: bool | None = None) -> nn.Module:
    """``module`` in DistributedDataParallel (``module`` itself when no process group is active).

    find_unused_parameters: default on when the module has trainable parameters outside its
    ``student`` (method connectors, which some schedules leave out of some steps).
    """
    if not active():
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    if find_unused_parameters is None:
        student = getattr(module, "student", None)
        own = {id(p) for p in student.parameters()} if isinstance(student, nn.Module) else set()
        find_unused_parameters = any(p.requires_grad and id(p) not in own for p in module.parameters())
    device = torch.device(device)
    device_ids = [device.index] if device.type == "cuda" else None
    return DDP(module, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def all_reduce_sum(values: Sequence[float], device: torch.device | str = "cpu") -> list[float]:
    """Element-wise sum of ``values`` over all ranks (``values`` unchanged when not distributed)."""
    if not active():
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def broadcast_object(obj: Any, src: int = 0, device: torch.device | str | None = None) -> Any:
    """``obj`` from rank ``src`` on every rank (itself when not distributed). Only ever receives
    objects sent by a peer of the same job, never data read from a file."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=None if device is None else torch.device(device))
    return box[0]


def barrier() -> None:
    if active():
        dist.barrier()
