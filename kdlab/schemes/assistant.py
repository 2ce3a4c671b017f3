"""Teacher assistant KD (Mirzadeh, Farajtabar, Li, Levine, Matsukawa, Ghasemzadeh; AAAI 2020).

When the teacher is much larger than the student, distil through one or more intermediate-size
assistants: teacher → assistant(s) → student, each link an ordinary distillation with the same
objective, schedule and seed.

Stages (sub-directories of the run directory, same layout): ``teacher/`` (only when the teacher is
a model name, trained here from labels), ``assistant0/``, ``assistant1/`` …, ``direct/`` (with
``direct``: the teacher distilled straight into a fresh student, to measure what the assistants
bought); the student is the scheme's own run directory.
"""
from __future__ import annotations

from typing import Any

from pydantic import Field

from kdlab.core import Teacher
from kdlab.engine.distiller import Distiller
from kdlab.engine.run import Result, evaluate_split
from kdlab.objective import DEFAULT_METHOD
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


class AssistantOptions(Spec):
    """``scheme:`` options of ``kdlab assistant``."""

    teacher: str = "cnn_large"  # a model name (trained here from labels) or a teacher checkpoint/file
    assistants: list[str] = Field(["cnn_small"], min_length=1)  # assistant models, largest first
    student: str = "cnn_tiny"  # the student model
    teacher_epochs: int | None = Field(None, ge=1)  # epochs of a teacher trained here (default train.epochs)
    direct: bool = True  # also distill the teacher straight into a fresh student, for comparison
    method: str | list[str | dict[str, Any]] = DEFAULT_METHOD  # the objective of every link, e.g. kd or dkd
    alpha: float | None = None  # weight of the response-family methods, CE gets 1 - alpha (default: paper's)
    T: float | None = None  # temperature of the response-family methods (default: paper's; kd 4)


@register_scheme("assistant", AssistantOptions)
def assistant(ctx: SchemeContext, opts: AssistantOptions) -> Result:
    """Distill ``opts.teacher`` into ``opts.student`` through ``opts.assistants``.

    ``Result.extra["chain"]`` lists each link's role, model and test accuracy (teacher first,
    student last); ``extra["direct_acc"]`` is the direct student's test accuracy when asked.
    """
    methods = objective(opts.method, opts.alpha, opts.T)  # checked before anything trains
    chain: list[dict[str, Any]] = []
    t: Teacher
    if is_model_name(opts.teacher):
        tr = ctx.train(opts.teacher, "teacher", epochs=opts.teacher_epochs)
        t = ctx.teacher(tr.student)
        chain.append({"role": "teacher", "model": opts.teacher, "test_acc": tr.test["acc"]})
    else:
        t = ctx.teacher(opts.teacher)
        chain.append({"role": "teacher", "model": model_name(getattr(t, "module", opts.teacher)),
                      "test_acc": teacher_acc(t, ctx.data)})
    first = t
    for i, a in enumerate(opts.assistants):
        ra = ctx.distill(t, a, f"assistant{i}", methods=methods)
        chain.append({"role": f"assistant{i}", "model": a, "test_acc": ra.test["acc"]})
        t = ctx.teacher(ra.student)
    direct_acc = ctx.distill(first, opts.student, "direct", methods=methods).test["acc"] if opts.direct else None
    trainable = Distiller(ctx.model(opts.student), t, create_methods(methods))

    def extra() -> dict[str, Any]:
        acc = evaluate_split(trainable.student, ctx.data, batch_size=ctx.schedule.eval_batch_size)["acc"]
        out: dict[str, Any] = {"chain": [*chain, {"role": "student", "model": opts.student, "test_acc": acc}]}
        if direct_acc is not None:
            out["direct_acc"] = direct_acc
        return out

    return ctx.run(trainable, None, extra=extra, report_teacher=t)
