"""Data-free distillation: a student distilled from a trained teacher with no real training data.

A synthesizer (:mod:`kdlab.synth`: ``dafl``, ``dfad``, ``zskt``, ``deepinv``) makes the inputs
against the frozen teacher; :class:`~kdlab.synth.SynthLoader` is the run's data source, so the
student trains in the one loop with an ordinary Distiller step (the objective, default KD at T = 1,
on synthetic batches with ``targets=None``). The synthesizer's state (generator, its optimiser,
memory bank, counters) rides in the trainable's ``state_dict`` (``get_extra_state``), so
``--resume`` continues it exactly. Why the synthesizer is the data source rather than part of the
trainable: docs/data_free.md.

Real data: the run never reads the training split (it is replaced by an empty one before anything
runs). The real test split is the only real data used: the deployed student's test metrics, and
``test_acc`` after every epoch for the accuracy-vs-compute figure (recorded, never used to pick
weights: the last epoch's student is deployed). ``val_acc`` is the student's top-1 agreement with the
teacher on synthetic samples drawn from the current synthesizer (no real validation data exists
here); the run's nominal validation split is a teacher-labelled synthetic batch.

Refused before any work, in one line: a teacher given as a model name (data-free needs a trained
one), a teacher without gradients (ONNX, a file of outputs, a TorchScript program without autograd)
and, for ``deepinv``, a teacher without BatchNorm statistics.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, cast

import torch
from pydantic import Field
from torch import Tensor, nn

from kdlab.core import Batch, Method, Teacher
from kdlab.data import DataSplits, Loader, Split
from kdlab.engine.distiller import Distiller
from kdlab.engine.run import Result, evaluate_split
from kdlab.errors import ConfigError
from kdlab.schemes._common import (
    SchemeContext,
    create_methods,
    is_model_name,
    model_name,
    objective,
    register_scheme,
    teacher_acc,
)
from kdlab.spec import Spec
from kdlab.synth import Synthesizer, SynthLoader, create_synth, grad_teacher


class DataFreeOptions(Spec):
    """``scheme:`` options of ``kdlab data-free``."""

    teacher: str | None = None  # a trained teacher: a kdlab checkpoint (run/best) or another differentiable source
    student: str = "resnet8"  # model name
    synth: Literal["dafl", "dfad", "zskt", "deepinv"] = "dafl"  # the synthesizer
    synth_options: dict[str, Any] = {}  # the synthesizer's hyperparameters (kdlab.synth.<name>), e.g. {lr: 0.001}
    steps: int = Field(50, ge=1)  # student steps (synthetic batches) per epoch
    # no labels here, so CE has nothing to weigh
    method: str | list[str | dict[str, Any]] | None = None  # null: the synth paper's (mae for dfad, kd T=1)
    alpha: float | None = 1.0  # weight of the distillation term
    T: float | None = None  # temperature of the distillation term (null: the method's default or the paper's)
    samples: int = Field(512, ge=16)  # synthetic samples drawn for the report (histogram, grid, diversity)
    curve: bool = True  # evaluate the real test split after every epoch (accuracy vs compute; report only)


class SynthDistiller(Distiller):
    """A Distiller whose ``state_dict`` also carries its synthesizer's state (``_extra_state``), so the
    loop's checkpoint of the trainable is everything a resumed data-free run needs."""

    def __init__(self, student: nn.Module, teacher: Teacher, methods: list[Method], synth: Synthesizer) -> None:
        super().__init__(student, teacher, methods)
        self._synth = [synth]  # a list: not a submodule, so the generator stays out of the student's optimiser

    def get_extra_state(self) -> dict[str, Any]:
        return self._synth[0].state_dict()

    def set_extra_state(self, state: Any) -> None:
        self._synth[0].load_state_dict(state)


def without_training_data(d: DataSplits) -> DataSplits:
    """``d`` with its training split replaced by an empty one of the same shape and normalisation:
    what describes the data (shape, classes, mean/std) stays, no training sample does."""
    tr = d.train
    # the scale stays: checkpoints record it as the deployed model's pre-processing
    empty = Split(torch.empty(0, *tr.x.shape[1:]), None, tr.mean, tr.std, tr.scale, torch.empty(0, dtype=torch.long))
    return replace(d, train=empty, augment=None, train_rows=None)


def pixel_bounds(split: Split) -> tuple[Tensor, Tensor]:
    """Per-channel range of normalised inputs for pixels 0 and 1 (``[C]`` each)."""
    return (0 - split.mean) / split.std, (1 - split.mean) / split.std


@torch.no_grad()
def agreement(student: nn.Module, teacher: Teacher, x: Tensor) -> float:
    """Top-1 agreement of student and teacher on inputs ``x`` (student in eval mode)."""
    from kdlab.models.contract import as_outputs

    was = student.training
    student.eval()
    s = as_outputs(student(x)).logits.argmax(1)
    student.train(was)
    return float((s == teacher(Batch(x)).logits.argmax(1)).float().mean())


def student_objective(opts: DataFreeOptions, paper: dict[str, Any]) -> list[dict[str, Any]]:
    """The resolved methods list: ``opts.method`` with α/T, or the synthesizer's paper objective at
    weight α (its temperature unless ``opts.T`` is given)."""
    if opts.method is not None:
        return objective(opts.method, opts.alpha, opts.T)
    entry = {**paper, **({"T": opts.T} if opts.T is not None else {})}
    return objective([entry], opts.alpha, None)


@register_scheme("data-free", DataFreeOptions)
def data_free(ctx: SchemeContext, opts: DataFreeOptions) -> Result:
    """Distil ``opts.teacher`` into ``opts.student`` on synthetic inputs only.

    ``Result.extra``: ``synth``, ``teacher``, ``teacher_acc`` (real test), ``class_histogram`` (the
    teacher's classes of ``samples`` synthetic inputs), ``diversity`` (their mean pairwise distance)
    and ``diversity_test`` (the real test inputs', for scale), ``figures`` (PNG paths).
    """
    # every refusal before any work: the objective, the synthesizer's options, the teacher
    if not opts.teacher or is_model_name(opts.teacher):
        raise ConfigError("data-free distillation needs a trained teacher: give --teacher a kdlab checkpoint "
                          f"(e.g. runs/x/best){', not the model name ' + repr(opts.teacher) if opts.teacher else ''}")
    # the synthetic batch is the student's batch: train.batch_size unless the synthesizer's options set one
    synth = create_synth(opts.synth, **{"batch_size": ctx.schedule.batch_size, **opts.synth_options})
    methods = student_objective(opts, type(synth).student_method)
    d = ctx.data
    free = without_training_data(d)
    teacher = ctx.teacher(opts.teacher, free)
    gt = grad_teacher(teacher, needs_bn=synth.needs_bn, synth=opts.synth)
    if d.test.y is None:
        raise ConfigError(f"dataset {d.name!r} has no test labels to measure the data-free student on")

    student = ctx.model(opts.student, data=free)
    synth.bind(gt, student, free.input_shape, free.num_classes)
    if hasattr(synth, "set_bounds") and len(free.input_shape) == 3:
        synth.set_bounds(*pixel_bounds(d.test))
    # the nominal validation split the loop needs: teacher-labelled synthetic inputs (no real data)
    vx = synth.sample(min(256, opts.samples), torch.Generator().manual_seed(ctx.seed + 1))
    with torch.no_grad():
        vy = teacher(Batch(vx)).logits.argmax(1)
    # already normalised inputs: identity normalisation
    run_data = replace(free, val=Split(vx, vy, torch.zeros_like(d.test.mean), torch.ones_like(d.test.std), 1.0))
    trainable = SynthDistiller(student, teacher, create_methods(methods), synth)
    loader = SynthLoader(synth, opts.steps)
    probe = torch.Generator()
    clock = {"t": time.process_time()}

    def on_set_epoch(epoch: int) -> None:
        clock["t"] = time.process_time()

    loader.on_set_epoch = on_set_epoch
    history: list[dict[str, Any]] = []

    def on_epoch_end(epoch: int, rec: dict[str, Any]) -> None:
        rec["epoch_cpu_seconds"] = round(time.process_time() - clock["t"], 3)
        rec.update(synth.stats())
        # agreement with the teacher on the synthesizer's current samples (fixed draw: no global RNG)
        rec["val_acc"] = agreement(trainable.student, teacher, synth.sample(256, probe.manual_seed(ctx.seed + 2)))
        for k in ("val_nll", "val_ece", "val_f1"):  # measured on the nominal split: not meaningful
            rec.pop(k, None)
        if opts.curve:
            rec["test_acc"] = evaluate_split(trainable.student.eval(), d, "test")["acc"]
            trainable.student.train()
        history.append(dict(rec))

    t_acc = teacher_acc(teacher, d)

    def extra() -> dict[str, Any]:
        return report_extra(ctx, opts, synth, teacher, d, history, t_acc)

    return ctx.run(trainable, data=run_data, loader=cast(Loader, loader), use_best=False, on_epoch_end=on_epoch_end,
                   extra=extra, report_teacher=teacher, meta={"synth": opts.synth})


def report_extra(ctx: SchemeContext, opts: DataFreeOptions, synth: Synthesizer, teacher: Teacher, d: DataSplits,
                 history: list[dict[str, Any]], t_acc: float | None) -> dict[str, Any]:
    """The data-free numbers and figures of a finished run (PNG files under ``<run>/data_free/``)."""
    from kdlab.report import data_free as figs
    from kdlab.report.plots import png

    x = synth.sample(opts.samples, torch.Generator().manual_seed(ctx.seed + 3))
    with torch.no_grad():
        logits = torch.cat([teacher(Batch(x[i:i + 256])).logits for i in range(0, len(x), 256)])
    counts = figs.class_histogram(logits, d.num_classes)
    test_x = d.test.gather(torch.arange(min(len(d.test), opts.samples)))
    div, div_test = figs.mean_pairwise_distance(x), figs.mean_pairwise_distance(test_x)
    out: dict[str, Any] = {"synth": opts.synth, "teacher": model_name(opts.teacher), "teacher_acc": t_acc,
                           "class_histogram": counts, "diversity": round(div, 4), "diversity_test": round(div_test, 4)}
    from kdlab.engine.distributed import is_main

    run = ctx.opts.run_dir
    if run is None or not is_main():  # under torchrun, rank 0 alone writes the figures
        return out
    full = history
    if (run / "metrics.jsonl").is_file():  # a resumed run: the epochs before the interruption too
        full = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    made = [("synth_samples", "Synthesised samples", "Synthetic inputs per class, as the frozen teacher labels them.",
             lambda: figs.sample_grid(x, logits.argmax(1), d.classes, mean=d.test.mean, std=d.test.std), x.dim() == 4),
            ("synth_classes", "Teacher's classes of synthetic samples",
             f"Argmax of the teacher over {len(x)} synthetic samples; a flat histogram means balanced classes.",
             lambda: figs.histogram(counts, d.classes), True),
            ("synth_diversity", "Diversity of synthetic samples",
             "Mean pairwise l2 distance of synthetic inputs against real test inputs (for scale); near 0 is "
             "mode collapse.", lambda: figs.diversity({"synthetic": div, "real test": div_test}), True),
            ("accuracy_vs_compute", "Test accuracy vs CPU minutes",
             "Real test top-1 after each epoch against the CPU minutes of training, synthesis included.",
             lambda: figs.accuracy_vs_compute(full), opts.curve)]
    folder = Path(run) / "data_free"
    folder.mkdir(parents=True, exist_ok=True)
    listed = []
    for key, title, caption, make, wanted in made:
        if not wanted:
            continue
        path = folder / f"{key}.png"
        path.write_bytes(png(make()))
        listed.append({"key": key, "title": title, "caption": caption, "path": str(path)})
    out["figures"] = listed
    return out
