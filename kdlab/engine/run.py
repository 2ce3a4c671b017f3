"""The run lifecycle: the one way a trainable becomes a finished run directory.

``train``, ``distill``, ``bench`` and every scheme build their trainable(s) and hand each to
:func:`run_trainable`, which

1. refuses a ``--resume`` whose config differs from the one the run was started with (naming the
   keys; only ``train.epochs`` may change, and only when the schedule stays exact),
2. writes the resolved ``config.yaml``,
3. trains with :func:`kdlab.engine.loop.fit` (``metrics.jsonl``, ``best``/``last`` checkpoints,
   ``state.pt``; resumable after a kill, also under ``torchrun``),
4. restores the best-on-validation student, evaluates it on test and writes ``summary.json``,
5. writes ``report.html`` and finishes the tracking run (TensorBoard / MLflow).

A scheme with several stages (a teacher, then an assistant, then the student) gives each stage its
own run directory under the scheme's (``<out>/<stage>/``, same layout); a resumed scheme replays
finished stages from their checkpoints and continues the interrupted one.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from torch import nn

from kdlab.core import Teacher, Trainable
from kdlab.data import DataSplits, Loader
from kdlab.engine import distributed
from kdlab.engine.loop import Evaluator, FitResult, fit
from kdlab.engine.schedule import Schedule
from kdlab.engine.tracking import TrackingSpec, finish_run, open_tracker
from kdlab.errors import ConfigError
from kdlab.evaluate.metrics import classification_metrics, predict
from kdlab.store import checkpoint as ckpt

log = logging.getLogger("kdlab")

# top-level config keys that do not change what a run computes: a resume may change them
RESUME_FREE = ("out", "threads", "report", "tracking")


@dataclass
class Result:
    """What a run gives back: the deployed student (best-on-validation weights), its test metrics."""

    student: nn.Module
    test: dict[str, float]
    history: list[dict[str, Any]]
    best_val_acc: float
    run_dir: Path | None
    seconds: float
    config: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"Result(test_acc={self.test.get('acc', float('nan')):.4f}, best_val_acc={self.best_val_acc:.4f}, "
                f"epochs={len(self.history)}, run_dir={str(self.run_dir)!r})")


@dataclass
class RunOptions:
    """How a run is kept: typed, taken from the config's top-level keys by the layer above."""

    run_dir: Path | None  # None: nothing is written (an in-memory run)
    config: dict[str, Any]  # the resolved config (JSON-able): saved as config.yaml, checked on resume
    command: str = "run"
    seed: int = 0
    resume: bool = False
    progress: bool = True
    tracking: TrackingSpec = field(default_factory=TrackingSpec)
    report: bool = True

    def stage(self, name: str, config: dict[str, Any] | None = None, *, report: bool | None = None) -> "RunOptions":
        """The options of one stage of a scheme: its own directory ``<run_dir>/<name>``."""
        return RunOptions(None if self.run_dir is None else self.run_dir / name,
                          self.config if config is None else config, f"{self.command}:{name}", self.seed,
                          self.resume, self.progress, self.tracking, self.report if report is None else report)


def evaluate_split(model: nn.Module, data: DataSplits, split: str = "test", batch_size: int = 512) -> dict[str, float]:
    s = getattr(data, split)
    return classification_metrics(predict(model, s, batch_size), s.y, data.num_classes)


def config_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved configs."""
    keys = sorted(set(old) | set(new), key=str)
    out: list[str] = []
    for k in keys:
        a, b = old.get(k, "<unset>"), new.get(k, "<unset>")
        key = f"{prefix}{k}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, key + ".")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(
                isinstance(x, dict) and isinstance(y, dict) for x, y in zip(a, b)):
            for i, (x, y) in enumerate(zip(a, b)):
                if x.get("name") != y.get("name"):  # another method: its name says it, not each of its options
                    out.append(f"{key}.{i}.name")
                else:
                    out += config_differences(x, y, f"{key}.{i}.")
        # an optional key added since the run started, left off (None), is no change
        elif a != b and not (a is None and b == "<unset>" or a == "<unset>" and b is None):
            out.append(key)
    return out


def _with_defaults(old: dict[str, Any]) -> dict[str, Any]:
    """A saved config with the defaults of keys added to ``data:`` and ``train:`` since it was written
    (an older run ran with what those defaults mean), so they are not taken for a changed setting."""
    from kdlab.data import DataSpec

    out = dict(old)
    for section, spec in (("data", DataSpec), ("train", Schedule)):
        if isinstance(old.get(section), dict):
            fields = spec.model_fields
            out[section] = {**{k: f.get_default(call_default_factory=True) for k, f in fields.items()
                               if k not in old[section]}, **old[section]}
    return out


def check_resume(run_dir: Path, config: dict[str, Any], schedule: Schedule) -> None:
    """Refuse to resume ``run_dir`` under a config other than the one it was started with.

    Keys in :data:`RESUME_FREE` may change. ``train.epochs`` may change when the schedule stays
    exact (step or constant learning rate) and no epoch past the new count has been trained.
    """
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return
    try:
        old = yaml.safe_load(saved.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot resume {run_dir}: its config.yaml is unreadable ({e})") from None
    diff = [k for k in config_differences(_with_defaults(old), config) if k.split(".")[0] not in RESUME_FREE]
    if "train.epochs" in diff and len(diff) == 1:
        done = _epochs_done(run_dir)
        if not schedule.exact_with_epochs():
            raise ConfigError(f"cannot resume {run_dir} with train.epochs {old['train']['epochs']} -> "
                              f"{config['train']['epochs']}: the cosine learning-rate schedule spans all epochs, so "
                              "the epochs already trained would not match (use a new --out, or "
                              "train.lr_schedule=step|constant from the start)")
        if done > schedule.epochs:
            raise ConfigError(f"cannot resume {run_dir} with train.epochs={schedule.epochs}: {done} epochs are "
                              "already trained")
        return
    if diff:
        shown = ", ".join(f"{k} ({_at(old, k)!r} -> {_at(config, k)!r})" for k in diff[:4])
        more = f" and {len(diff) - 4} more" if len(diff) > 4 else ""
        raise ConfigError(f"cannot resume {run_dir}: the config differs from the one it was started with in "
                          f"{shown}{more}; resume with the same settings or use a new --out")


def _at(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if isinstance(d, list):
            d = d[int(part)] if part.isdigit() and int(part) < len(d) else "<unset>"
        elif isinstance(d, dict):
            d = d.get(part, "<unset>")
        else:
            return "<unset>"
    return d


def _epochs_done(run_dir: Path) -> int:
    try:
        return sum(1 for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip())
    except OSError:
        return 0


def run_trainable(trainable: Trainable, data: DataSplits, schedule: Schedule, opts: RunOptions, *,
                  meta: dict[str, Any] | None = None, loader: Loader | None = None, use_best: bool = True,
                  on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
                  report_teacher: Teacher | None = None,
                  extra: Callable[[], dict[str, Any]] | None = None,
                  evaluate: Evaluator | None = None) -> Result:
    """Train ``trainable`` on ``data`` and keep the run (see the module docstring).

    meta:     recorded in every checkpoint beside the model spec and the data's provenance.
    use_best: evaluate and deploy the best-on-validation student (False: the last weights).
    extra:    called after training, before the test evaluation of ``trainable.student``; its
              JSON-able dict lands in ``summary.json`` and ``Result.extra``.
    evaluate: how the student is measured on validation (each epoch) and test (default:
              classification metrics; see :func:`kdlab.engine.loop.fit`).
    """
    env = distributed.init()  # joins the torchrun process group, or describes a single process
    run = opts.run_dir
    writer = run is not None and env.is_main
    if writer:
        assert run is not None
        if opts.resume:
            check_resume(run, opts.config, schedule)
        run.mkdir(parents=True, exist_ok=True)
        ckpt.atomic_write_text(run / "config.yaml", yaml.safe_dump(opts.config, sort_keys=False))
    student = trainable.student
    full_meta = {**model_meta(student, data), "command": opts.command, "seed": opts.seed, **(meta or {})}
    tracker = open_tracker(opts.tracking if env.is_main else TrackingSpec(), run,
                           name=f"{opts.command}-{data.name}", params=opts.config,
                           tags={"kdlab.command": opts.command, "kdlab.data": data.name})
    try:
        r: FitResult = fit(trainable, data, schedule, seed=opts.seed, run_dir=run, meta=full_meta, resume=opts.resume,
                           progress=opts.progress, loader=loader, rank=env.rank, world_size=env.world_size,
                           device=env.device if env.enabled else None,
                           on_epoch_end=_both(on_epoch_end, tracker.log_epoch if tracker.enabled else None),
                           evaluate=evaluate)
    except BaseException:
        tracker.finish(status="FAILED")
        raise
    if use_best and r.best_state is not None:
        trainable.student.load_state_dict(r.best_state)
    more = extra() if extra is not None else {}  # may restore the weights to deploy (e.g. the best peer)
    student = trainable.student.eval()
    test = (evaluate_split(student, data, batch_size=schedule.eval_batch_size) if evaluate is None
            else evaluate(student, data.test, schedule.eval_batch_size))
    result = Result(student, test, r.history, r.best["val_acc"], run, r.seconds, opts.config, more)
    if writer:
        assert run is not None
        summary = {"command": opts.command, "test": test, "best_val_acc": r.best["val_acc"],
                   "best_epoch": r.best.get("epoch"), "epochs": len(r.history), "train_seconds": round(r.seconds, 2),
                   "params": sum(p.numel() for p in student.parameters()), **({"extra": more} if more else {})}
        ckpt.atomic_write_text(run / "summary.json", json.dumps(summary, indent=2, default=_jsonable))
        if opts.report:  # <run>/report.html; a failure only warns
            from kdlab.report import report_after_run

            report_after_run(run, data=data, student=student, teacher=report_teacher)
    finish_run(tracker, run if writer else None, test, {"epochs": len(r.history), "best_val_acc": r.best["val_acc"]})
    return result


def _both(a: Callable[[int, dict[str, Any]], None] | None,
          b: Callable[[int, dict[str, Any]], None] | None) -> Callable[[int, dict[str, Any]], None] | None:
    if a is None or b is None:
        return a or b

    def both(epoch: int, rec: dict[str, Any]) -> None:
        a(epoch, rec)  # the scheme's hook first: it may add per-peer metrics that tracking then logs
        b(epoch, rec)

    return both


def _jsonable(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    return str(v)


def model_meta(model: nn.Module, data: DataSplits) -> dict[str, Any]:
    """What a checkpoint records: how to rebuild the model, and exactly which data trained it."""
    spec = getattr(model, "kdlab_spec", None)
    return {"model": spec, "data": data.name, "classes": data.classes, "input_shape": list(data.input_shape),
            "mean": data.train.mean.tolist(), "std": data.train.std.tolist(), "scale": data.train.scale,
            "data_provenance": data.provenance}
