"""Shared plumbing for the scheme files (not a scheme): the scheme registry, the context a scheme
runs in, class subsets and teacher measurements.

A scheme is one function ``fn(ctx: SchemeContext, opts: Options) -> Result`` registered with
``@register_scheme(name, Options)``, where ``Options`` is a :class:`kdlab.spec.Spec` of the scheme's
own typed options (the ``scheme:`` section of its config). It builds its trainable(s) and hands
each to ``ctx.run`` (one run directory per stage, all with the same layout); it never writes run
files itself. :func:`run_scheme` validates the section and calls it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Generic, Mapping, Sequence, TypeVar

import torch
from pydantic import ValidationError
from torch import Tensor, nn

from kdlab.config import RunConfig
from kdlab.core import Batch, Method, Teacher, Trainable
from kdlab.data import DataSpec, DataSplits, Loader, Split, load_data_spec
from kdlab.engine.distiller import Distiller
from kdlab.engine.loop import Evaluator
from kdlab.engine.run import Result, RunOptions, evaluate_split, run_trainable
from kdlab.engine.schedule import Schedule
from kdlab.errors import ConfigError
from kdlab.evaluate.metrics import classification_metrics, predict
from kdlab.methods import create_method
from kdlab.models.load import model_for_data
from kdlab.objective import parse_objective
from kdlab.registry import Registry
from kdlab.spec import Spec
from kdlab.teachers.resolve import resolve_teacher

O = TypeVar("O", bound=Spec)


@dataclass
class SchemeEntry(Generic[O]):
    fn: Callable[["SchemeContext", O], Result]
    options: type[O]
    # how the scheme reads its ``data:`` section (default: a registered dataset, load_data_spec)
    data: Callable[[DataSpec], DataSplits] | None = None


SCHEMES: Registry[Any] = Registry("scheme")


def register_scheme(name: str, options: type[O], data: Callable[[DataSpec], DataSplits] | None = None
                    ) -> Callable[[Callable[["SchemeContext", O], Result]], Callable[["SchemeContext", O], Result]]:
    """``@register_scheme("mutual", MutualOptions)`` on ``def mutual(ctx, opts) -> Result``.

    ``data``: how the scheme reads its ``data:`` section when it is not a registered dataset
    (a text corpus for a language model); default :func:`kdlab.data.load_data_spec`."""

    def deco(fn: Callable[["SchemeContext", O], Result]) -> Callable[["SchemeContext", O], Result]:
        SCHEMES.register(name)(SchemeEntry(fn, options, data))
        return fn

    return deco


def scheme_options(name: str, section: Mapping[str, Any] | None) -> Spec:
    """The scheme's typed options from a config's ``scheme:`` section (unknown keys are errors)."""
    entry: SchemeEntry[Any] = SCHEMES.get(name)
    raw = dict(section or {})
    given = raw.pop("name", name)
    if given != name:
        raise ConfigError(f"this config is for scheme {given!r} (scheme.name); run it with `kdlab {given}`")
    try:
        return entry.options.model_validate(raw)
    except ValidationError as e:
        import difflib

        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            near = difflib.get_close_matches(str(err["loc"][-1]), list(entry.options.model_fields), n=1)
            hint = f"; did you mean 'scheme.{near[0]}'?" if near else ""
            raise ConfigError(f"unknown key 'scheme.{loc}' for scheme {name!r}{hint}") from None
        raise ConfigError(f"bad value for 'scheme.{loc}': {err['msg']} (got {err.get('input')!r})") from None


@dataclass
class SchemeContext:
    """What a scheme runs with: the data, the schedule, the seed and how runs are kept.

    ``ctx.run`` hands a trainable to the run lifecycle; ``stage=None`` is the scheme's own run
    directory (the deployed student), a name is a sub-directory (a teacher, an assistant, a baseline).
    """

    cfg: RunConfig
    data: DataSplits
    opts: RunOptions

    @property
    def schedule(self) -> Schedule:
        return self.cfg.train

    @property
    def seed(self) -> int:
        return self.cfg.seed

    def model(self, spec: str | nn.Module, seed: int | None = None, data: DataSplits | None = None,
              **options: Any) -> nn.Module:
        """A fresh registered model initialised from ``seed`` (default: the run's), or the module given."""
        if isinstance(spec, nn.Module):
            return spec
        torch.manual_seed(self.seed if seed is None else seed)
        return model_for_data(spec, data or self.data, **options)

    def run(self, trainable: Trainable, stage: str | None = None, *, data: DataSplits | None = None,
            schedule: Schedule | None = None, epochs: int | None = None, loader: Loader | None = None,
            use_best: bool = True, on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
            extra: Callable[[], dict[str, Any]] | None = None, report: bool | None = None,
            report_teacher: Teacher | None = None, meta: dict[str, Any] | None = None,
            evaluate: Evaluator | None = None) -> Result:
        sched = schedule or self.schedule
        if epochs is not None:
            sched = sched.model_copy(update={"epochs": epochs})
        opts = self.opts if stage is None else self.opts.stage(stage, {**self.opts.config, "stage": stage},
                                                               report=report)
        if stage is None and report is not None:
            opts = replace(opts, report=report)
        return run_trainable(trainable, data or self.data, sched, opts, loader=loader, use_best=use_best,
                             on_epoch_end=on_epoch_end, extra=extra, report_teacher=report_teacher, evaluate=evaluate,
                             meta={"scheme": self.opts.command, **({"stage": stage} if stage else {}), **(meta or {})})

    def train(self, model: str | nn.Module, stage: str | None, *, data: DataSplits | None = None,
              epochs: int | None = None, seed: int | None = None) -> Result:
        """Train a model from labels alone (a teacher trained here, or a baseline)."""
        d = data or self.data
        m = self.model(model, seed, d)
        return self.run(Distiller(m, None, [create_method("ce")]), stage, data=d, epochs=epochs)

    def distill(self, teacher: Teacher | nn.Module | str | Path, student: str | nn.Module, stage: str | None, *,
                methods: Sequence[Mapping[str, Any]], data: DataSplits | None = None, epochs: int | None = None,
                seed: int | None = None) -> Result:
        """Offline distillation of ``teacher`` (any source) into ``student`` with a resolved methods list."""
        d = data or self.data
        t = self.teacher(teacher, d)
        return self.run(Distiller(self.model(student, seed, d), t, create_methods(methods)), stage, data=d,
                        epochs=epochs)

    def teacher(self, source: Teacher | nn.Module | str | Path, data: DataSplits | None = None) -> Teacher:
        return resolve_teacher(source, data or self.data)


def create_methods(entries: Sequence[Mapping[str, Any]]) -> list[Method]:
    return [create_method(e["name"], **{k: v for k, v in e.items() if k != "name"}) for e in entries]


def objective(method: str | Sequence[str | Mapping[str, Any]], alpha: float | None,
              T: float | None) -> list[dict[str, Any]]:
    """A scheme's distillation objective, parsed the one way (:func:`kdlab.objective.parse_objective`)."""
    return parse_objective(method, alpha=alpha, T=T)


def run_scheme(name: str, cfg: RunConfig, *, data: DataSplits | None = None, resume: bool = False,
               progress: bool = True, save: bool = True) -> Result:
    """Validate ``cfg.scheme`` against the scheme's options and run it in the run lifecycle."""
    from kdlab.engine import distributed

    entry: SchemeEntry[Any] = SCHEMES.get(name)
    options = scheme_options(name, cfg.scheme)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    distributed.init()
    d = data or (entry.data or load_data_spec)(cfg.data)
    resolved = cfg.model_dump(mode="json")
    resolved["scheme"] = {"name": name, **options.model_dump(mode="json")}
    run_dir = Path(cfg.out) if cfg.out else Path(f"runs/{name}-{d.name}-s{cfg.seed}")
    opts = RunOptions(run_dir if save else None, resolved, name, cfg.seed, resume, progress, cfg.tracking, cfg.report)
    return entry.fn(SchemeContext(cfg, d, opts), options)


def is_model_name(spec: Any) -> bool:
    """A registered model name (as opposed to a checkpoint path, a module or a Teacher)."""
    from kdlab.models import list_models

    return isinstance(spec, str) and spec in list_models()


def model_name(spec: Any) -> str:
    if isinstance(spec, str):
        return spec
    return (getattr(spec, "kdlab_spec", None) or {}).get("name", type(spec).__name__)


def evaluate(model: nn.Module, data: DataSplits, split: str = "test") -> dict[str, float]:
    return evaluate_split(model, data, split)


@torch.no_grad()
def teacher_logits(teacher: Teacher | nn.Module, split: Split, batch_size: int = 512) -> Tensor:
    """Logits ``[N, C]`` of a Teacher (or module) over a split, in order, with sample ids attached."""
    if isinstance(teacher, nn.Module):
        return predict(teacher, split, batch_size)
    outs = [teacher(b).logits.float() for b in Loader(split, batch_size)]
    return torch.cat(outs)


def teacher_metrics(teacher: Teacher | nn.Module, data: DataSplits, split: str = "test") -> dict[str, float]:
    s: Split = getattr(data, split)
    if s.y is None:
        raise ConfigError(f"the {split} split has no labels to measure the teacher on")
    return classification_metrics(teacher_logits(teacher, s), s.y, data.num_classes)


def teacher_acc(teacher: Teacher | nn.Module, data: DataSplits, split: str = "test") -> float | None:
    """Test accuracy of a teacher, or None for one that only answers for training-split ids."""
    if getattr(teacher, "train_split_only", False):
        return None
    return teacher_metrics(teacher, data, split)["acc"]


def check_classes(classes: Sequence[int], num_classes: int, what: str) -> list[int]:
    out = [int(c) for c in classes]
    if not out:
        raise ConfigError(f"{what}: empty class list")
    if len(set(out)) != len(out):
        raise ConfigError(f"{what}: repeated class in {out}")
    bad = [c for c in out if not 0 <= c < num_classes]
    if bad:
        raise ConfigError(f"{what}: class {bad[0]} is outside 0..{num_classes - 1}")
    return out


def _restrict_split(s: Split, classes: list[int], num_classes: int, remap: bool) -> Split:
    assert s.y is not None
    lut = torch.full((num_classes,), -1, dtype=torch.long)
    cls = torch.tensor(classes, dtype=torch.long)
    lut[cls] = torch.arange(len(classes)) if remap else cls
    keep = lut[s.y] >= 0
    return replace(s, x=s.x[keep].contiguous(), y=lut[s.y][keep].contiguous(), index=None)


def restrict(data: DataSplits, classes: Sequence[int], *, remap: bool) -> DataSplits:
    """The samples of ``classes`` only, in every split. ``remap=True``: labels become positions in
    ``classes`` (a model over ``len(classes)`` outputs); otherwise labels keep their original ids.
    Normalisation statistics stay those of the full data."""
    cl = check_classes(classes, data.num_classes, "classes")
    names = [data.classes[c] for c in cl] if remap else data.classes
    n = data.num_classes
    return replace(data, train=_restrict_split(data.train, cl, n, remap), val=_restrict_split(data.val, cl, n, remap),
                   test=_restrict_split(data.test, cl, n, remap), classes=names)


def stratified_indices(y: Tensor, fraction: float, seed: int) -> Tensor:
    """A seeded, class-stratified ``fraction`` of row ids (at least one per class present)."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"labeled fraction must be in (0, 1], got {fraction}")
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in torch.unique(y):
        rows = torch.nonzero(y == c).flatten()
        k = max(1, int(round(fraction * len(rows))))
        picked.append(rows[torch.randperm(len(rows), generator=g)[:k]])
    return torch.sort(torch.cat(picked)).values


def batch_of(split: Split, idx: Tensor) -> Batch:
    return Batch(split.gather(idx), None if split.y is None else split.y[idx], idx, torch.zeros_like(idx))
