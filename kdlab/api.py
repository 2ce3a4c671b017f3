"""The Python face of kdlab; the CLI is a thin layer over these functions.

    import kdlab
    teacher = kdlab.train("cnn_large", "fashion-mnist", epochs=8).student
    result = kdlab.distill(teacher, "cnn_tiny", "fashion-mnist", method="kd", T=4, alpha=0.9)
    print(result.test["acc"])
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from kdlab.config import RunConfig, TrainConfig, dump_config, load_config
from kdlab.core import Batch, Method, Teacher
from kdlab.data import DataSplits, Split, load_data
from kdlab.store import checkpoint as ckpt
from kdlab.engine.distiller import Distiller
from kdlab.engine.loop import FitResult, Schedule, fit
from kdlab.errors import CheckpointError, ConfigError, IncompatibleError, KDLabError
from kdlab.evaluate.metrics import classification_metrics, predict
from kdlab.methods import create_method
from kdlab.models import create_model
from kdlab.teachers.frozen import FrozenTeacher, renormalize


@dataclass
class Result:
    """What a training or distillation run gives back."""

    student: nn.Module
    test: dict[str, float]
    history: list[dict[str, Any]]
    best_val_acc: float
    run_dir: Path | None
    seconds: float
    config: RunConfig | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"Result(test_acc={self.test.get('acc', float('nan')):.4f}, best_val_acc={self.best_val_acc:.4f}, "
                f"epochs={len(self.history)}, run_dir={str(self.run_dir)!r})")


# ---------------------------------------------------------------- data and models

def get_data(data: str | DataSplits, **kwargs: Any) -> DataSplits:
    if isinstance(data, DataSplits):
        return data
    return load_data(data, **kwargs)


def data_from_config(cfg: RunConfig) -> DataSplits:
    d = cfg.data
    seed = cfg.seed if d.split_seed is None else d.split_seed
    return load_data(d.name, root=d.root, val_fraction=d.val_fraction, seed=seed, subset=d.subset,
                     augment=d.augment, **d.options)


def build_model(name: str, data: DataSplits, **options: Any) -> nn.Module:
    shape = data.input_shape
    if len(shape) == 1:  # vector data [D]: only models that flatten their input apply
        return _create_model(name, data.num_classes, in_channels=shape[0], image_size=1, **options)
    in_ch = shape[0] if len(shape) == 3 else 1
    return _create_model(name, data.num_classes, in_channels=in_ch, image_size=shape[-1], **options)


def _create_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    try:
        return create_model(name, num_classes, **kwargs)
    except (TypeError, ValueError, RuntimeError) as e:  # option values the model cannot be built with
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"model {name!r} cannot be built for {num_classes} classes with {kwargs}: {msg}") from None


def model_meta(model: nn.Module, data: DataSplits) -> dict[str, Any]:
    spec = getattr(model, "kdlab_spec", None)
    return {"model": spec, "data": data.name, "classes": data.classes, "input_shape": list(data.input_shape),
            "mean": data.train.mean.tolist(), "std": data.train.std.tolist(), "scale": data.train.scale}


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a kdlab checkpoint (``run/best`` or ``run/best.safetensors``) from its metadata."""
    state, meta = ckpt.load_weights(path)
    spec = meta.get("model")
    if not spec:
        raise CheckpointError(f"{path}: metadata has no model spec; load it with a model factory instead")
    spec = dict(spec)
    try:
        model = create_model(spec.pop("name"), **spec)
    except (TypeError, ValueError, RuntimeError, KeyError, KDLabError) as e:
        raise CheckpointError(f"{path}: its metadata names a model that cannot be built ({e})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the model: {str(e).splitlines()[0]}") from None
    return model.eval(), meta


def _as_teacher(teacher: Teacher | nn.Module | str | Path, data: DataSplits) -> Teacher:
    """A Teacher from a module, a kdlab checkpoint path, or anything already callable on a Batch."""
    if isinstance(teacher, (str, Path)):
        from kdlab.teachers.external import source_of_path, teacher_from_path

        if source_of_path(teacher):  # teacher.onnx, teacher.pt (TorchScript), a transformers directory
            return teacher_from_path(teacher, data)
        module, meta = load_model(teacher)
        _check_classes(meta, data, str(teacher))
        transform = None
        if "mean" in meta and len(data.input_shape) == 3:
            src_m, src_s = data.train.mean, data.train.std
            dst_m, dst_s = torch.tensor(meta["mean"]), torch.tensor(meta["std"])
            if dst_m.shape == src_m.shape and not (torch.allclose(src_m, dst_m) and torch.allclose(src_s, dst_s)):
                transform = renormalize(src_m, src_s, dst_m, dst_s)
        return FrozenTeacher(module, transform)
    if isinstance(teacher, nn.Module):
        return FrozenTeacher(teacher)
    if callable(teacher):
        return teacher
    raise ConfigError(f"cannot use {type(teacher).__name__} as a teacher")


def _check_classes(meta: dict[str, Any], data: DataSplits, where: str) -> None:
    n = len(meta.get("classes") or []) or (meta.get("model") or {}).get("num_classes")
    if n and n != data.num_classes:
        raise IncompatibleError(f"teacher {where} predicts {n} classes but dataset {data.name!r} has {data.num_classes}")
    shape = meta.get("input_shape")
    if shape and list(shape) != list(data.input_shape):
        raise IncompatibleError(f"teacher {where} expects inputs {tuple(shape)} but dataset {data.name!r} gives "
                                f"{tuple(data.input_shape)}")


def teacher_from_config(cfg: RunConfig, data: DataSplits) -> Teacher | None:
    t = cfg.teacher
    if t is None:
        return None
    from kdlab.teachers.external import is_external, teacher_from_source

    if is_external(t):  # factory + safetensors, TorchScript, ONNX, Hugging Face directory
        return teacher_from_source(t, data)
    if t.checkpoint:
        return _as_teacher(t.checkpoint, data)
    if t.model is not None:
        model = build_model(t.model.name, data, **t.model.options)
        if t.weights:
            from safetensors.torch import load_file

            if not Path(t.weights).is_file():
                raise ConfigError(f"teacher.weights: file {t.weights} not found")
            try:
                model.load_state_dict(load_file(t.weights))
            except Exception as e:  # not safetensors (a pickle is never unpickled), or weights of another model
                msg = " ".join(l.strip() for l in str(e).strip().splitlines()[:2])[:300] or type(e).__name__
                raise CheckpointError(f"teacher.weights {t.weights} cannot be loaded into {t.model.name!r}: {msg}") from None
        return FrozenTeacher(model)
    raise ConfigError("teacher: give teacher.checkpoint, teacher.model (+ weights), teacher.factory (+ weights), "
                      "teacher.torchscript, teacher.onnx or teacher.hf")


def methods_from_config(cfg: RunConfig) -> list[Method]:
    out = []
    for m in cfg.methods:
        kwargs = {k: v for k, v in m.model_dump().items() if k != "name"}
        out.append(create_method(m.name, **kwargs))
    return out


def schedule_from_config(t: TrainConfig) -> Schedule:
    return Schedule(**t.model_dump())


# ---------------------------------------------------------------- the engine behind CLI and API

def run(cfg: RunConfig, *, command: str = "distill", data: DataSplits | None = None,
        student: nn.Module | None = None, teacher: Teacher | None = None, resume: bool = False,
        progress: bool = True, save: bool = True) -> Result:
    """Build everything a config names, train, evaluate the best checkpoint on test, write the run."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    from kdlab.engine import distributed

    env = distributed.init()  # torchrun: join the process group (a single process otherwise)
    data = data or data_from_config(cfg)
    torch.manual_seed(cfg.seed)
    student = student if student is not None else build_model(cfg.student.name, data, **cfg.student.options)
    teacher = teacher if teacher is not None else teacher_from_config(cfg, data)
    loader = None
    if cfg.cache:  # the teacher's outputs come from a cache (built, reused or rebuilt as needed)
        from kdlab.teachers.cache_build import cache_for_run

        teacher, loader = cache_for_run(cfg, data, teacher)
    methods = methods_from_config(cfg)
    needs_teacher = [type(m).__name__ for m in methods if m.needs and teacher is None]
    if needs_teacher:
        raise ConfigError(f"method {needs_teacher[0]} needs a teacher: set teacher.checkpoint (or --teacher)")
    if teacher is not None and loader is None and not env.enabled:
        # a live teacher on CPU: its forward in ONNX Runtime / BN-folded when that agrees with eager.
        # Single-process only: under torchrun a rank once aborted in C++ with ONNX Runtime beside gloo.
        from kdlab.teachers.accelerate import accelerate_live

        mode = cfg.teacher.accelerate if cfg.teacher is not None else "auto"
        sample = Batch(data.train.gather(torch.arange(min(64, len(data.train)))))
        teacher = accelerate_live(teacher, sample, [m.needs for m in methods], mode)
    run_dir = None
    if save:
        run_dir = Path(cfg.out or f"runs/{command}-{data.name}-{cfg.student.name}-s{cfg.seed}")
        if env.is_main:  # only rank 0 writes
            run_dir.mkdir(parents=True, exist_ok=True)
            ckpt.atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    meta = {**model_meta(student, data), "command": command, "seed": cfg.seed}
    trainable = Distiller(student, teacher, methods)
    from kdlab.engine.tracking import finish_run, open_tracker

    tracker = open_tracker(cfg if env.is_main else None, run_dir, command)  # TensorBoard / MLflow (cfg.tracking)
    try:
        r: FitResult = fit(trainable, data, schedule_from_config(cfg.train), seed=cfg.seed, run_dir=run_dir,
                           meta=meta, resume=resume, progress=progress, loader=loader, rank=env.rank,
                           world_size=env.world_size, device=env.device if env.enabled else None,
                           on_epoch_end=tracker.log_epoch if tracker.enabled else None)
    except BaseException:
        tracker.finish(status="FAILED")
        raise
    if r.best_state is not None:  # report test metrics of the best-on-validation weights
        student.load_state_dict(r.best_state)
    test = evaluate(student, data)
    result = Result(student.eval(), test, r.history, r.best["val_acc"], run_dir, r.seconds, cfg)
    if run_dir is not None and env.is_main:
        summary = {"command": command, "test": test, "best_val_acc": r.best["val_acc"], "best_epoch": r.best.get("epoch"),
                   "epochs": len(r.history), "train_seconds": round(r.seconds, 2),
                   "params": sum(p.numel() for p in student.parameters())}
        ckpt.atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
        if cfg.report:  # <run>/report.html; a failure only warns
            from kdlab.report import report_after_run

            report_after_run(run_dir, data=data, student=student, teacher=None if getattr(cfg, "cache", None) else teacher)
    finish_run(tracker, run_dir, test, {"epochs": len(r.history), "best_val_acc": r.best["val_acc"]})
    return result


def evaluate(model: nn.Module | str | Path, data: str | DataSplits, split: str = "test", **data_kwargs: Any) -> dict[str, float]:
    """Metrics of ``model`` (a module or a checkpoint path) on a split of ``data``."""
    d = get_data(data, **data_kwargs)
    s: Split = getattr(d, split)
    if isinstance(model, (str, Path)):
        model, meta = load_model(model)
        _check_classes(meta, d, "checkpoint")
        if "mean" in meta and len(d.input_shape) == 3:  # evaluate with the checkpoint's own normalisation
            s = replace(s, mean=torch.tensor(meta["mean"]), std=torch.tensor(meta["std"]))
    return classification_metrics(predict(model, s), s.y, d.num_classes)


def _config(data: str | DataSplits, student: str, methods: list[dict[str, Any]], epochs: int, seed: int,
            out: str | None, overrides: dict[str, Any]) -> RunConfig:
    name = data.name if isinstance(data, DataSplits) else data
    base: dict[str, Any] = {"data": {"name": name}, "student": {"name": student}, "methods": methods,
                            "train": {"epochs": epochs}, "seed": seed, "out": out}
    train_keys = set(TrainConfig.model_fields)
    for k, v in overrides.items():
        if k in train_keys:
            base["train"][k] = v
        else:
            raise ConfigError(f"unknown argument {k!r} (training options: {', '.join(sorted(train_keys))})")
    return load_config(base=base)


def train(model: str | nn.Module, data: str | DataSplits, *, epochs: int = 10, seed: int = 0, out: str | None = None,
          save: bool = False, progress: bool = False, **train_options: Any) -> Result:
    """Train a model from labels alone (a teacher, or a student baseline)."""
    d = get_data(data, seed=seed)
    name = model if isinstance(model, str) else (getattr(model, "kdlab_spec", {}) or {}).get("name", type(model).__name__)
    cfg = _config(d, name, [{"name": "ce"}], epochs, seed, out, train_options)
    return run(cfg, command="train", data=d, student=None if isinstance(model, str) else model,
               progress=progress, save=save or out is not None)


def distill(teacher: Teacher | nn.Module | str | Path, student: str | nn.Module, data: str | DataSplits, *,
            method: str | Sequence[str | dict[str, Any]] = "kd", alpha: float | None = 0.9, T: float | None = None,
            epochs: int = 10, seed: int = 0, out: str | None = None, save: bool = False, progress: bool = False,
            cache: str | None = None, **train_options: Any) -> Result:
    """Distill ``teacher`` into ``student`` on ``data``.

    method: a name (``"kd"``), ``"kd+fitnet"``, or a list of names / ``{"name": ..., **hyperparameters}``.
    alpha:  Hinton's mix: the first logit method gets weight α and cross-entropy 1 − α. ``None``
            keeps each method's own default weight and CE at 1.
    cache:  a teacher-output cache directory: built on first use, reused while it matches the
            teacher and data, rebuilt when stale (see docs/cache.md).
    """
    d = get_data(data, seed=seed)
    items = method.split("+") if isinstance(method, str) else list(method)
    methods: list[dict[str, Any]] = [dict(m) if isinstance(m, dict) else {"name": m.strip()} for m in items]
    ce = 1.0
    if alpha is not None:
        if not 0 <= alpha <= 1:
            raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
        methods[0].setdefault("weight", alpha)
        ce = 1 - alpha
    if T is not None:
        methods[0].setdefault("T", T)
    sname = student if isinstance(student, str) else (getattr(student, "kdlab_spec", {}) or {}).get("name", type(student).__name__)
    cfg = _config(d, sname, [{"name": "ce", "weight": ce}, *methods], epochs, seed, out, train_options)
    if cache is not None:
        cfg.cache = str(cache)
    return run(cfg, command="distill", data=d, student=None if isinstance(student, str) else student,
               teacher=_as_teacher(teacher, d), progress=progress, save=save or out is not None)
