"""Teacher assistant KD (Mirzadeh, Farajtabar, Li, Levine, Matsukawa, Ghasemzadeh; AAAI 2020).

When the teacher is much larger than the student, distil through one or more intermediate-size
assistants: teacher → assistant(s) → student, each link an ordinary distillation.
"""
from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from kdlab.api import Result, distill, get_data, train
from kdlab.core import Teacher
from kdlab.data import DataSplits
from kdlab.errors import ConfigError
from kdlab.schemes._common import as_teacher, is_model_name, model_name, sub_dir, teacher_acc


def teacher_assistant(teacher: str | nn.Module | Teacher, assistants: str | nn.Module | Sequence[str | nn.Module],
                      student: str | nn.Module, data: str | DataSplits, *, epochs: int = 10,
                      teacher_epochs: int | None = None, method: str = "kd", alpha: float = 0.9, T: float = 4.0,
                      direct: bool = False, seed: int = 0, out: str | None = None, progress: bool = False,
                      **train_options: Any) -> Result:
    """Distill ``teacher`` into ``student`` through ``assistants`` in one call.

    teacher:    a model name (trained here from labels for ``teacher_epochs``, default ``epochs``),
                a trained module, a kdlab checkpoint path, or any Teacher.
    assistants: one model (name or module) or a chain, largest first.
    direct:     also distill the teacher straight into a fresh student (same seed and schedule) and
                report it, to measure what the assistant bought.

    Returns the student's Result; ``extra["chain"]`` lists each link's model and test accuracy
    (teacher first), ``extra["direct_acc"]`` the direct student's test accuracy when asked.

        r = teacher_assistant("cnn_large", "cnn_small", "cnn_tiny", "fashion-mnist", epochs=5, direct=True)
    """
    d = get_data(data, seed=seed)
    chain_models = [assistants] if isinstance(assistants, (str, nn.Module)) else list(assistants)
    if not chain_models:
        raise ConfigError("teacher_assistant needs at least one assistant")
    opts = dict(method=method, alpha=alpha, T=T, epochs=epochs, seed=seed, progress=progress, **train_options)
    chain: list[dict[str, Any]] = []
    if is_model_name(teacher):
        tr = train(teacher, d, epochs=teacher_epochs or epochs, seed=seed, out=sub_dir(out, "teacher"),
                   progress=progress, **train_options)
        t: Any = tr.student
        chain.append({"role": "teacher", "model": teacher, "test_acc": tr.test["acc"]})
    else:
        t = as_teacher(teacher, d)
        chain.append({"role": "teacher", "model": model_name(getattr(t, "module", teacher)),
                      "test_acc": teacher_acc(t, d)})
    first = t
    for i, a in enumerate(chain_models):
        ra = distill(t, a, d, out=sub_dir(out, f"assistant{i}"), **opts)
        chain.append({"role": f"assistant{i}", "model": model_name(a), "test_acc": ra.test["acc"]})
        t = ra.student
    r = distill(t, student, d, out=sub_dir(out, "student"), **opts)
    chain.append({"role": "student", "model": model_name(student), "test_acc": r.test["acc"]})
    r.extra["chain"] = chain
    if direct:
        if isinstance(student, nn.Module):
            raise ConfigError("direct=True needs the student as a model name (a fresh copy is trained)")
        rd = distill(first, student, d, out=sub_dir(out, "direct"), **opts)
        r.extra["direct_acc"] = rd.test["acc"]
    return r
