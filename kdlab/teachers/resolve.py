"""The one way to get a :class:`kdlab.core.Teacher`: :func:`resolve_teacher`.

From

* a module (a :class:`~kdlab.teachers.frozen.FrozenTeacher`), or anything already callable on a
  Batch (used as it is);
* a path: a kdlab checkpoint (``run/best`` or ``run/best.safetensors``; inputs re-normalised to the
  checkpoint's own mean/std), an ONNX file (``.onnx``), a TorchScript file (``.pt``, ``.ts``,
  ``.torchscript``) or a transformers model directory (``config.json`` + safetensors weights).
  Anything else is refused unread, so a pickle is never unpickled;
* a :class:`TeacherSpec` (the ``teacher:`` config section): any of the above, a registered model +
  safetensors weights, or a factory you wrote + safetensors weights.

A teacher that cannot serve the data is refused here, in one line, before any training: a checkpoint
by its recorded classes and input shape; an ONNX file by its declared input shape; a TorchScript file
by the input shape it was traced with (or the one kdlab's ``export.json`` beside it records); and
every external source by running it on two samples (the logits must be ``[B, classes]``). A scripted
program that accepts any input size is checked by its class count only: running it cannot tell
whether it was made for inputs of this size.

When the teacher was trained with a different input normalisation than the student's data, give the
teacher's ``mean``/``std`` (per channel, on ``[0, 1]`` pixels) and the wrapper maps the student's
normalised inputs to the teacher's before every call (see :func:`kdlab.teachers.frozen.renormalize`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence, cast

import torch
from pydantic import BaseModel, ValidationError
from torch import Tensor, nn

from kdlab.core import Batch, Inputs, Teacher
from kdlab.errors import ConfigError, IncompatibleError
from kdlab.models.load import load_model, model_for_data
from kdlab.models.spec import ModelSpec
from kdlab.spec import Spec
from kdlab.teachers.frozen import FrozenTeacher, renormalize

if TYPE_CHECKING:
    from kdlab.data import DataSplits

SOURCES = ("checkpoint", "model", "factory", "torchscript", "onnx", "hf")
TORCHSCRIPT_SUFFIXES = (".pt", ".ts", ".torchscript")
CHECKPOINT_SUFFIXES = ("", ".safetensors", ".json")
OUTPUTS_SUFFIXES = (".npy", ".npz")
FORMS = ("a kdlab checkpoint (run/best or run/best.safetensors), an .onnx file, a TorchScript .pt/.ts file, "
         "a transformers model directory, or a .npy/.npz file of its outputs over the training split")


class TeacherSpec(Spec):
    """A kdlab checkpoint (``path/best``), or any of the other sources documented in the README."""

    checkpoint: str | None = None
    model: ModelSpec | None = None  # with ``weights``: a registered model + a safetensors file
    weights: str | None = None  # safetensors state dict for ``model`` or ``factory``
    factory: str | None = None  # "package.module:function" returning an nn.Module (called with ``options``)
    options: dict[str, Any] = {}  # keyword arguments for ``factory``
    features: dict[str, str] = {}  # ``factory``: feature name -> submodule path, e.g. {pooled: avgpool}
    torchscript: str | None = None  # a TorchScript file; loading it runs the program inside: only files you trust
    onnx: str | None = None  # an ONNX file run by ONNX Runtime: a black-box teacher (logits only)
    hf: str | None = None  # a local Hugging Face transformers model directory (safetensors weights)
    mean: list[float] | None = None  # the per-channel input normalisation the teacher expects (on [0, 1]
    std: list[float] | None = None  # pixels); the student's inputs are re-normalised to it
    # how a live module teacher runs in a single CPU process: auto tries ONNX Runtime, then BN folding, each
    # checked against the eager teacher (benchmarks/cpu_options.md); eager keeps the PyTorch module
    accelerate: Literal["auto", "eager", "onnx", "fold_bn"] = "auto"


# ---------------------------------------------------------------- the resolver

def resolve_teacher(source: Teacher | nn.Module | str | Path | TeacherSpec, data: DataSplits, *,
                    build_model: Callable[..., nn.Module] | None = None) -> Teacher:
    """A Teacher for ``data`` from a module, a Teacher, a path or a :class:`TeacherSpec` (see the
    module docstring). ``build_model(name, data, **options)`` builds ``TeacherSpec.model``
    (default :func:`kdlab.models.load.model_for_data`)."""
    if isinstance(source, (str, Path)):
        return _from_path(source, data)
    if isinstance(source, BaseModel):
        return _from_spec(_as_spec(source), data, build_model or model_for_data)
    if isinstance(source, nn.Module):
        return FrozenTeacher(source)
    if callable(source):
        return source
    raise ConfigError(f"cannot use {type(source).__name__} as a teacher")


def _as_spec(source: BaseModel) -> TeacherSpec:
    if isinstance(source, TeacherSpec):
        return source
    try:  # a config section with the same fields
        return TeacherSpec.model_validate(source.model_dump())
    except ValidationError as e:
        raise ConfigError(f"cannot use {type(source).__name__} as a teacher section: {e.errors()[0]['msg']}") from None


def _from_spec(t: TeacherSpec, data: DataSplits, build: Callable[..., nn.Module]) -> Teacher:
    given = [s for s in SOURCES if getattr(t, s)]
    if not given:
        raise ConfigError("teacher: give teacher.checkpoint, teacher.model (+ weights), teacher.factory (+ weights), "
                          "teacher.torchscript, teacher.onnx or teacher.hf")
    if len(given) > 1:
        raise ConfigError(f"teacher: give exactly one source, not {' + '.join(given)}")
    source = given[0]
    if t.weights and source not in ("factory", "model"):
        raise ConfigError(f"teacher.weights goes with teacher.factory or teacher.model, not teacher.{source}")
    stats = (t.mean, t.std) if t.mean is not None or t.std is not None else None
    if source == "checkpoint":
        return _from_path(t.checkpoint, data, stats=stats)  # type: ignore[arg-type]
    if source in ("torchscript", "onnx", "hf"):
        path = getattr(t, source)
        return _load(source, Path(path), data, str(path), f"teacher.{source} {path}", stats)
    transform = _user_transform(data, stats)
    if source == "model":
        assert t.model is not None
        model = build(t.model.name, data, **t.model.options)
        if t.weights:
            from kdlab.teachers.external import load_safetensors_into

            load_safetensors_into(model, t.weights, t.model.name)
        return FrozenTeacher(model, transform)
    from kdlab.teachers.external import load_factory_model

    assert t.factory is not None
    teacher = FrozenTeacher(load_factory_model(t.factory, t.weights, t.options, t.features), transform)
    check_teacher(teacher, data, f"teacher.factory {t.factory}")
    return teacher


def kind_of_path(path: str | Path) -> str:
    """What a teacher path holds, by its form: ``hf`` (a directory with ``config.json``), ``onnx``,
    ``torchscript`` (``.pt``, ``.ts``, ``.torchscript``), ``checkpoint`` (``run/best``,
    ``run/best.safetensors``) or ``outputs`` (``.npy``/``.npz`` logits over the training split, see
    :class:`~kdlab.teachers.from_file.FileTeacher`); a ConfigError naming the accepted forms otherwise."""
    p = Path(path)
    if p.is_dir():
        if (p / "config.json").is_file():
            return "hf"
        if (p / "best.safetensors").is_file():
            raise ConfigError(f"teacher {path} is a run directory: give one of its checkpoints, e.g. {p / 'best'}")
        raise ConfigError(f"teacher {path} is a directory but not a transformers model directory (no config.json); "
                          f"a teacher is {FORMS}")
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in TORCHSCRIPT_SUFFIXES:
        return "torchscript"
    if suffix in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    if suffix in OUTPUTS_SUFFIXES:
        return "outputs"
    raise ConfigError(f"teacher {path}: not a teacher file kdlab reads (a {p.suffix} file); a teacher is {FORMS}. "
                      f"Pickles are never loaded")


def _from_path(path: str | Path, data: DataSplits, stats: tuple[Any, Any] | None = None) -> Teacher:
    kind = kind_of_path(path)
    p = Path(path)
    if kind in ("onnx", "torchscript", "outputs") and not p.is_file():
        raise ConfigError(f"teacher {path} not found")
    return _load(kind, p, data, str(path), f"teacher {path}", stats)


def _load(kind: str, p: Path, data: DataSplits, where: str, label: str, stats: tuple[Any, Any] | None) -> Teacher:
    """Load ``p`` as a teacher of ``kind``; ``where`` names it in metadata errors, ``label`` in probe errors."""
    user = _user_transform(data, stats)
    if kind == "checkpoint":
        module, meta = load_model(p)
        check_teacher_meta(meta, data, where)
        return FrozenTeacher(module, user if stats is not None else meta_transform(meta, data))
    if kind == "outputs":  # a black box known only by its logits over the training split (read without pickle)
        from kdlab.teachers.from_file import FileTeacher

        file_teacher = FileTeacher(p)
        if file_teacher.num_classes != data.num_classes:
            raise IncompatibleError(f"{label} holds {file_teacher.num_classes} classes but dataset {data.name!r} has "
                                    f"{data.num_classes}")
        return file_teacher
    if kind == "hf":
        from kdlab.teachers.external import load_hf

        teacher: Teacher = FrozenTeacher(load_hf(p), user)
        check_teacher(teacher, data, label)
        return teacher
    meta = export_manifest(p) or {}  # a file written by `kdlab export`: its classes, input shape, normalisation
    check_teacher_meta(meta, data, where)
    transform = user if stats is not None else meta_transform(meta, data)
    if kind == "onnx":
        from kdlab.teachers.onnx import OnnxTeacher

        onnx_teacher = OnnxTeacher(p, transform)
        _check_shape(_onnx_input_shape(onnx_teacher), data, where, "its declared input")
        teacher = onnx_teacher
    else:
        from kdlab.teachers.external import load_torchscript, traced_input_shape

        module = load_torchscript(p)
        _check_shape(traced_input_shape(module), data, where, "the shape it was traced with")
        teacher = FrozenTeacher(module, transform)
    check_teacher(teacher, data, label)
    return teacher


# ---------------------------------------------------------------- checks

def check_teacher_meta(meta: dict[str, Any], data: DataSplits, where: str, what: str = "teacher") -> None:
    """Refuse a model whose recorded classes or input shape (a checkpoint's metadata) do not
    match ``data``; ``what`` and ``where`` name it in the message (``teacher runs/t/best``)."""
    n = len(meta.get("classes") or []) or (meta.get("model") or {}).get("num_classes")
    if n and n != data.num_classes:
        raise IncompatibleError(f"{what} {where} predicts {n} classes but dataset {data.name!r} has "
                                f"{data.num_classes}")
    shape = meta.get("input_shape")
    if shape:
        _check_shape(tuple(shape), data, where, what=what)


def _check_shape(shape: Sequence[int] | None, data: DataSplits, where: str, why: str = "",
                 what: str = "teacher") -> None:
    if shape is None or list(shape) == list(data.input_shape):
        return
    note = f" ({why})" if why else ""
    raise IncompatibleError(f"{what} {where} expects inputs {tuple(shape)}{note} but dataset {data.name!r} gives "
                            f"{tuple(data.input_shape)}")


def check_teacher(teacher: Teacher, data: DataSplits, label: str) -> None:
    """Run the teacher on two validation samples: it must give ``[B, num_classes]`` logits."""
    split = data.val if len(data.val) else data.train
    idx = torch.arange(min(2, len(split)))
    try:
        out = teacher(Batch(split.gather(idx)))
    except Exception as e:
        raise IncompatibleError(f"{label} fails on inputs of shape {(len(idx), *data.input_shape)}: "
                                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    logits = out.logits
    if logits.dim() != 2 or logits.shape[1] != data.num_classes:
        raise IncompatibleError(f"{label} gives logits of shape {tuple(logits.shape)} but dataset {data.name!r} "
                                f"has {data.num_classes} classes")


def _onnx_input_shape(teacher: Any) -> tuple[int, ...] | None:
    """The per-sample input shape an ONNX model declares, when every dimension after the batch is fixed."""
    inputs = getattr(teacher, "inputs", None) or []
    if len(inputs) != 1 or "float" not in str(inputs[0].type):
        return None  # token inputs, several inputs: checked by running it
    dims = list(inputs[0].shape or [])[1:]
    if not dims or not all(isinstance(d, int) and d > 0 for d in dims):
        return None
    return tuple(dims)


# ---------------------------------------------------------------- normalisation and file metadata

def input_transform(data_mean: Tensor, data_std: Tensor, mean: Sequence[float] | None,
                    std: Sequence[float] | None) -> Callable[[Inputs], Inputs] | None:
    """Map inputs normalised with the data's statistics to the teacher's ``mean``/``std``.

    ``None`` when the teacher gives no statistics or they equal the data's. A single value applies
    to every channel.
    """
    if mean is None and std is None:
        return None
    if mean is None or std is None:
        raise ConfigError("teacher.mean and teacher.std go together: give both")
    c = data_mean.numel()
    m = torch.as_tensor(list(mean), dtype=torch.float32)
    s = torch.as_tensor(list(std), dtype=torch.float32)
    m = m.expand(c).clone() if m.numel() == 1 else m
    s = s.expand(c).clone() if s.numel() == 1 else s
    if m.numel() != c or s.numel() != c:
        raise ConfigError(f"teacher.mean/std have {m.numel()}/{s.numel()} values but the inputs have {c} channels")
    if (s <= 0).any():
        raise ConfigError("teacher.std must be positive")
    if torch.allclose(m, data_mean.float()) and torch.allclose(s, data_std.float()):
        return None
    if data_mean.dim() != 1 or data_mean.numel() != c:
        raise ConfigError("teacher.mean/std apply to image data only")
    return _image_transform(renormalize(data_mean.float(), data_std.float(), m, s))


def _image_transform(f: Callable[[Tensor], Tensor]) -> Callable[[Inputs], Inputs]:
    """A tensor-to-tensor transform as a Teacher's input transform (made for image data only, whose
    inputs are always tensors)."""
    return cast(Callable[[Inputs], Inputs], f)


def _user_transform(data: DataSplits, stats: tuple[Any, Any] | None) -> Callable[[Inputs], Inputs] | None:
    """The re-normalisation to ``teacher.mean``/``teacher.std`` (None when not given)."""
    if stats is None:
        return None
    if len(data.input_shape) != 3:
        raise ConfigError("teacher.mean/std apply to image data only")
    return input_transform(data.train.mean, data.train.std, *stats)


def meta_transform(meta: dict[str, Any], data: DataSplits) -> Callable[[Inputs], Inputs] | None:
    """The re-normalisation from ``data``'s statistics to those a teacher's metadata records
    (``mean``/``std``, image data only); None when they are equal or not recorded."""
    if meta.get("mean") is None or meta.get("std") is None or len(data.input_shape) != 3:
        return None
    src_m, src_s = data.train.mean, data.train.std
    dst_m, dst_s = torch.tensor(meta["mean"]), torch.tensor(meta["std"])
    if dst_m.shape != src_m.shape or dst_s.shape != src_s.shape or (
            torch.allclose(src_m, dst_m) and torch.allclose(src_s, dst_s)):
        return None
    return _image_transform(renormalize(src_m, src_s, dst_m, dst_s))


def export_manifest(path: str | Path) -> dict[str, Any] | None:
    """What ``kdlab export`` recorded about ``path`` in the ``export.json`` beside it (classes,
    ``input_shape`` without the batch dimension, ``mean``/``std``), in checkpoint-metadata form;
    None when there is none, it does not list this file, or the file's checksum differs from it."""
    p = Path(path)
    doc_path = p.parent / "export.json"
    if not doc_path.is_file():
        return None
    try:
        doc = json.loads(doc_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    files = doc.get("files")
    if not isinstance(files, dict):
        return None
    entry = next((f for f in files.values() if isinstance(f, dict) and f.get("path") == p.name), None)
    if entry is None:
        return None
    if entry.get("sha256"):
        from kdlab.store.checkpoint import sha256_file

        if sha256_file(p) != entry["sha256"]:
            return None  # replaced since the export: the manifest no longer describes it
    meta: dict[str, Any] = {"classes": doc.get("classes")}
    shape = (doc.get("input") or {}).get("shape")
    if isinstance(shape, list) and len(shape) > 1 and all(isinstance(d, int) for d in shape[1:]):
        meta["input_shape"] = shape[1:]
    pre = doc.get("preprocess") or {}
    if pre.get("mean") is not None and pre.get("std") is not None:
        meta["mean"], meta["std"] = pre["mean"], pre["std"]
    return meta
