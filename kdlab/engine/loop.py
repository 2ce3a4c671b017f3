"""The one training loop. Schemes arrange teachers and students into a
:class:`kdlab.core.Trainable` and hand it to the run lifecycle (:mod:`kdlab.engine.run`), which
calls :func:`fit`.
"""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, cast

import numpy as np
import torch
from torch import nn

from kdlab.core import Batch, Trainable
from kdlab.data import DataSplits, Loader
from kdlab.engine.allocator import tune_allocator
from kdlab.engine.schedule import Schedule
from kdlab.errors import CheckpointError, ConfigError, DataError, NonFiniteLossError
from kdlab.evaluate.metrics import evaluate_model
from kdlab.store import checkpoint as ckpt

log = logging.getLogger("kdlab")


@dataclass
class FitResult:
    student: nn.Module
    history: list[dict[str, Any]]
    best: dict[str, Any]
    run_dir: Path | None
    seconds: float
    best_state: dict[str, torch.Tensor] | None = None  # student weights at the best val epoch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(params: list[nn.Parameter], s: Schedule) -> torch.optim.Optimizer:
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay,
                               nesterov=s.momentum > 0)
    if s.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    if s.optimizer == "adam":
        return torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)
    raise ValueError(f"unknown optimizer {s.optimizer!r} (sgd, adamw, adam)")


def make_scheduler(opt: torch.optim.Optimizer, s: Schedule) -> torch.optim.lr_scheduler.LRScheduler:
    if s.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, s.epochs))
    if s.lr_schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=s.milestones, gamma=s.gamma)
    if s.lr_schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _e: 1.0)
    raise ValueError(f"unknown lr_schedule {s.lr_schedule!r} (cosine, step, constant)")


def train_step(trainable: Trainable | nn.Module, batch: Batch, optimizer: torch.optim.Optimizer,
               grad_clip: float | None = None, step: int = 0,
               autocast: bool = False) -> tuple[dict[str, float], torch.Tensor]:
    """One optimisation step: forward, sum the weighted terms, backward, step.

    ``autocast``: run the forward under bf16 autocast (on the batch's device).
    Returns the terms as floats and the student's logits (for running accuracy).
    """
    with torch.autocast(_device_type(batch), dtype=torch.bfloat16, enabled=autocast):
        out, terms = trainable(batch)
    loss = cast(torch.Tensor, sum(terms.values()))
    if not torch.isfinite(loss):
        bad = next((k for k, v in terms.items() if not torch.isfinite(v)), "loss")
        raise NonFiniteLossError(f"non-finite loss at step {step}: "
                                 f"term {bad!r} = {float(terms.get(bad, loss).detach())}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(trainable.parameters(), grad_clip)
    optimizer.step()
    logged = {k: float(v.detach()) for k, v in terms.items()}
    logged["loss"] = float(loss.detach())
    return logged, out.logits.detach()


def _device_type(batch: Batch) -> str:
    x = batch.inputs
    return (x if isinstance(x, torch.Tensor) else next(iter(x.values()))).device.type


Evaluator = Callable[[nn.Module, Any, int], dict[str, float]]


def default_evaluate(model: nn.Module, split: Any, batch_size: int) -> dict[str, float]:
    """The per-epoch validation metrics of a classifier: accuracy, NLL, ECE, macro-F1."""
    return {k: v for k, v in evaluate_model(model, split, batch_size).items() if k in ("acc", "nll", "ece", "f1")}


def fit(trainable: Trainable, data: DataSplits, schedule: Schedule, *, seed: int = 0,
        run_dir: str | Path | None = None, meta: dict[str, Any] | None = None, resume: bool = False,
        progress: bool = True, loader: Loader | None = None, rank: int = 0, world_size: int = 1,
        device: str | torch.device | None = None,
        on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
        evaluate: Evaluator | None = None) -> FitResult:
    """Train ``trainable`` on ``data.train``; evaluate ``trainable.student`` on ``data.val`` each
    epoch; write metrics, best/last checkpoints and a resumable state into ``run_dir``.

    ``resume``: continue from ``run_dir/state.pt`` (model, optimiser, scheduler, every RNG, history
    and the best weights); the result is identical to an uninterrupted run.

    ``on_epoch_end(epoch, rec)`` runs after the validation metrics are in ``rec`` and before the
    best epoch is decided and the epoch is written: it may add metrics to ``rec``, update state the
    trainable keeps (``get_extra_state``) and change ``rec["val_acc"]`` together with the deployed
    ``trainable.student`` (a cohort deploying its best peer).

    ``evaluate(student, split, batch_size) -> {metric: value}`` measures the student on the
    validation split each epoch (default: :func:`default_evaluate`, classification metrics); it must
    return ``acc``, which picks the best epoch. Token models pass their own (next-token accuracy,
    NLL, perplexity); every metric it returns is recorded as ``val_<name>``.

    Distributed (``world_size > 1`` inside an initialised process group, see
    :mod:`kdlab.engine.distributed`): ``schedule.batch_size`` is the global batch and each rank
    reads ``batch_size / world_size`` of it; the trainable is wrapped in DDP, the training metrics
    are summed over ranks, every rank evaluates the full validation split, and only rank 0 writes.
    """
    tune_allocator()  # activation buffers stay on the warm heap (kdlab/engine/allocator.py)
    seed_everything(seed)
    run = Path(run_dir) if run_dir is not None else None
    writer = rank == 0 and run is not None
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if not isinstance(trainable, nn.Module):
        raise TypeError(f"fit trains an nn.Module, got {type(trainable).__name__}")
    if len(data.val) == 0:
        raise DataError("the validation split is empty (data.val_fraction is 0 or the dataset is too small); "
                        "the best epoch is chosen on it")
    if loader is None:
        if schedule.batch_size % world_size:
            raise ConfigError(f"train.batch_size {schedule.batch_size} (the global batch) must be divisible by "
                              f"the number of processes, {world_size}")
        loader = Loader(data.train, schedule.batch_size // world_size, shuffle=True, seed=seed, augment=data.augment,
                        drop_last=len(data.train) > schedule.batch_size, rank=rank, world_size=world_size)
    if dev.type != "cpu":
        _move(trainable, dev)
    first = next(iter(loader)).to(dev)
    trainable.prepare(first, data.info)
    if dev.type != "cpu":
        _move(trainable, dev)  # connectors built by prepare
    # NHWC convolutions: 1.1-1.9x faster training steps on CPU across our CNNs, but the CPU's NHWC
    # BatchNorm accumulates its batch sums less precisely (benchmarks/cpu_options.md), hence opt-in.
    # Converting the weights is enough: convolutions then run and return NHWC. Undone at the end.
    nhwc = schedule.channels_last and isinstance(data.train.x, torch.Tensor) and data.train.x.dim() == 4
    if nhwc:
        trainable.to(memory_format=torch.channels_last)
    params = [p for p in trainable.parameters() if p.requires_grad]
    opt = make_optimizer(params, schedule)
    sched = make_scheduler(opt, schedule)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"val_acc": -1.0}
    best_state: dict[str, torch.Tensor] | None = None
    start_epoch, step = 0, 0
    seconds_before = 0.0  # training time of the epochs a resumed run already did
    if resume and run is not None:
        state = _resume_state(run) if rank == 0 else None
        if world_size > 1:  # rank 0 reads the run directory; the other ranks may not see it
            from kdlab.engine import distributed

            state = distributed.broadcast_object(state, device=dev)
        if state is not None:
            trainable.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            _set_rng(state)
            start_epoch, step, best = state["epoch"] + 1, state["step"], state["best"]
            history = list(state["history"])[:start_epoch]
            best_state = state.get("best_state")
            seconds_before = float(state.get("seconds", sum(r.get("epoch_seconds", 0.0) for r in history)))
            if writer:
                assert run is not None
                _repair_checkpoints(run, trainable, best_state, meta or {}, state["epoch"], best, history)
    net: nn.Module = trainable
    if world_size > 1:
        from kdlab.engine import distributed

        net = distributed.wrap(trainable, dev)
    t0 = time.perf_counter()
    for epoch in range(start_epoch, schedule.epochs):
        loader.set_epoch(epoch)
        trainable.set_progress(epoch, schedule.epochs)
        net.train()
        sums: dict[str, float] = {}
        correct = seen = count = 0
        te = time.perf_counter()
        bar = _bar(loader, epoch, schedule.epochs, progress and rank == 0)
        for batch in bar:
            if dev.type != "cpu":
                batch = batch.to(dev)
            logged, logits = train_step(net, batch, opt, schedule.grad_clip, step,
                                         autocast=schedule.precision == "bf16")
            step += 1
            n = len(batch)
            count += n
            for k, v in logged.items():
                sums[k] = sums.get(k, 0.0) + v * n
            if batch.targets is not None and logits.dim() == 2:
                correct += int((logits.argmax(1) == batch.targets).sum())
                seen += n
            if hasattr(bar, "set_postfix") and step % 10 == 0:
                bar.set_postfix(loss=f"{logged['loss']:.3f}", acc=f"{correct / max(seen, 1):.3f}")
        if hasattr(bar, "close"):
            bar.close()
        sched.step()
        if world_size > 1:  # the epoch's metrics over all ranks
            from kdlab.engine import distributed

            keys = sorted(sums)
            tot = distributed.all_reduce_sum([count, correct, seen, *(sums[k] for k in keys)], dev)
            count, correct, seen = int(tot[0]), int(tot[1]), int(tot[2])
            sums = dict(zip(keys, tot[3:]))
        rec: dict[str, Any] = {"epoch": epoch + 1, "step": step, "lr": opt.param_groups[0]["lr"],
                               "epoch_seconds": round(time.perf_counter() - te, 3)}
        rec.update({f"train_{k}": v / max(count, 1) for k, v in sums.items()})
        if seen:
            rec["train_acc"] = correct / seen
        rec.update({f"val_{k}": v
                    for k, v in (evaluate or default_evaluate)(trainable.student, data.val,
                                                               schedule.eval_batch_size).items()})
        if on_epoch_end is not None:
            # before the epoch is kept: what the hook records (per-peer metrics, a scheme's own state in
            # the trainable) lands in metrics.jsonl and state.pt, and it may set which student is deployed
            on_epoch_end(epoch, rec)
        history.append(rec)
        is_best = rec["val_acc"] > best["val_acc"]
        if is_best:
            best = {"epoch": epoch + 1, "val_acc": rec["val_acc"]}
            best_state = {k: v.detach().clone(memory_format=torch.contiguous_format)
                          for k, v in trainable.student.state_dict().items()}
        if writer:
            assert run is not None
            _write_epoch(run, trainable, opt, sched, epoch, step, best, rec, is_best, meta or {}, history, best_state,
                         seconds_before + time.perf_counter() - t0)
    if nhwc:
        trainable.to(memory_format=torch.contiguous_format)
    if best_state is None and run is not None and (run / "best.safetensors").is_file():  # state.pt of an older kdlab
        best_state = ckpt.load_weights(run / "best")[0]
    return FitResult(trainable.student, history, best, run, seconds_before + time.perf_counter() - t0, best_state)


def _move(trainable: nn.Module, dev: torch.device) -> None:
    trainable.to(dev)
    teacher = getattr(trainable, "teacher", None)  # held outside the module tree
    if teacher is not None and hasattr(teacher, "to"):
        teacher.to(dev)


def _rng_state() -> dict[str, Any]:
    np_state: Any = np.random.get_state(legacy=True)  # the legacy tuple ("MT19937", key, pos, has_gauss, gauss)
    state: dict[str, Any] = {
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python_rng": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch_rng"])
    if "numpy_rng" in state:
        r = state["numpy_rng"]
        np.random.set_state(("MT19937", r["key"].numpy().astype(np.uint32), r["pos"], r["has_gauss"], r["gauss"]))
    if "python_rng" in state:
        v: Any = state["python_rng"]
        random.setstate((v[0], tuple(v[1]), v[2]))
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])


def _resume_state(run: Path) -> dict[str, Any] | None:
    """The state to continue from, or None when ``run`` holds none yet (a run killed during its
    first epoch starts over). A damaged state.pt is an error naming it."""
    path = run / "state.pt"
    if not path.is_file():
        log.warning(f"nothing to resume in {run} (no state.pt yet): starting from the first epoch")
        return None
    state = ckpt.load_state(path)
    missing = [k for k in ("model", "optimizer", "scheduler", "torch_rng", "epoch", "step", "best") if k not in state]
    if missing:
        raise CheckpointError(f"training state {path} lacks {', '.join(missing)}: not a kdlab training state")
    if "history" not in state:  # written by an older kdlab: the history lives in metrics.jsonl only
        try:
            rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot resume: {run / 'metrics.jsonl'} is unreadable ({e})") from None
        state["history"] = rows
    return state


def _repair_checkpoints(run: Path, trainable: Trainable, best_state: dict[str, torch.Tensor] | None,
                        meta: dict[str, Any], epoch: int, best: dict[str, Any], history: list[dict[str, Any]]) -> None:
    """On resume: a missing or damaged last/best checkpoint is rewritten from the training state."""
    for name in ("last", "best"):
        try:
            ckpt.load_weights(run / name)
            continue
        except CheckpointError as e:
            problem = str(e)
        if name == "last":
            rec = history[epoch] if epoch < len(history) else {}
            ckpt.save_weights(run / "last", trainable.student,
                              {**_of(meta, trainable), "epoch": epoch + 1, "val_acc": rec.get("val_acc")})
        elif best_state is not None:
            ckpt.save_weights(run / "best", _StateHolder(best_state), {**_of(meta, trainable),
                                                                       "epoch": best.get("epoch"),
                                                                       "val_acc": best.get("val_acc")})
        else:
            log.warning(f"{problem}; it cannot be rebuilt from {run / 'state.pt'} and is left as it is")
            continue
        log.warning(f"{problem}; rewrote {run / (name + '.safetensors')} from {run / 'state.pt'}")


def _of(meta: dict[str, Any], trainable: Trainable) -> dict[str, Any]:
    """The checkpoint metadata with the spec of the student saved now (a cohort may deploy another peer)."""
    spec = getattr(trainable.student, "kdlab_spec", None)
    return {**meta, "model": spec} if spec is not None else meta


class _StateHolder(nn.Module):
    """Presents a plain state dict to :func:`kdlab.store.checkpoint.save_weights`."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self._state = state

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return self._state


def _bar(loader: Loader, epoch: int, epochs: int, show: bool):
    if not show:
        return loader
    from tqdm import tqdm

    # disable=None: a bar on a terminal, nothing when output goes to a file or a pipe
    return tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False, dynamic_ncols=True, mininterval=0.5,
                disable=None)


def _write_epoch(run: Path, trainable: Trainable, opt: torch.optim.Optimizer,
                 sched: torch.optim.lr_scheduler.LRScheduler, epoch: int, step: int, best: dict,
                 rec: dict, is_best: bool, meta: dict, history: list[dict[str, Any]],
                 best_state: dict[str, torch.Tensor] | None, seconds: float) -> None:
    run.mkdir(parents=True, exist_ok=True)
    m = {**_of(meta, trainable), "epoch": epoch + 1, "val_acc": rec["val_acc"]}
    ckpt.save_weights(run / "last", trainable.student, m)
    if is_best:
        ckpt.save_weights(run / "best", trainable.student, m)
    ckpt.atomic_write_text(run / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
    # the resumable state goes last: if we die before this, resume replays this epoch
    ckpt.save_state(run / "state.pt", {"model": trainable.state_dict(), "optimizer": opt.state_dict(),
                                       "scheduler": sched.state_dict(), **_rng_state(),
                                       "epoch": epoch, "step": step, "best": best, "history": history,
                                       "best_state": best_state, "seconds": seconds})
