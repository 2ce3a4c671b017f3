"""Teachers from outside kdlab: your own model code, TorchScript, ONNX, Hugging Face.

Every loader returns a :class:`kdlab.core.Teacher`. Weights are read from safetensors files (never
from pickles); the only sources that bring code are the ones you name explicitly: a
``package.module:factory`` you wrote, or a TorchScript file (which holds a compiled program: load
only files you trust).

When the teacher was trained with a different input normalisation than the student's data, give the
teacher's ``mean``/``std`` (per channel, on ``[0, 1]`` pixels) and the wrapper maps the student's
normalised inputs to the teacher's before every call (see :func:`kdlab.teachers.frozen.renormalize`).
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from kdlab.core import Batch, Inputs, Outputs, Teacher
from kdlab.errors import CheckpointError, ConfigError, IncompatibleError
from kdlab.teachers.frozen import FrozenTeacher, renormalize

SOURCES = ("checkpoint", "model", "factory", "torchscript", "onnx", "hf")


# ---------------------------------------------------------------- input normalisation

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
    return renormalize(data_mean.float(), data_std.float(), m, s)


# ---------------------------------------------------------------- loaders (module level)

def load_safetensors_state(path: str | Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"teacher.weights: file {p} not found")
    if p.suffix != ".safetensors":
        raise ConfigError(f"teacher.weights: {p} is not a .safetensors file (pickled checkpoints are refused: "
                          "convert with safetensors.torch.save_file(model.state_dict(), 'teacher.safetensors'))")
    try:
        return load_file(str(p))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"cannot read {p}: {e}") from None


def import_factory(spec: str) -> Callable[..., nn.Module]:
    """``"package.module:function"`` (or ``package.module:Class``) → the callable."""
    if ":" not in spec:
        raise ConfigError(f"teacher.factory {spec!r} must look like package.module:function")
    mod_name, _, attr = spec.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        raise ConfigError(f"teacher.factory {spec!r}: cannot import {e.name!r} (is it on PYTHONPATH?)") from None
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"teacher.factory {spec!r}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"teacher.factory {spec!r} is not callable")
    return obj


def load_factory_model(spec: str, weights: str | Path | None = None, options: dict[str, Any] | None = None,
                       features: dict[str, str] | None = None) -> nn.Module:
    """Build ``factory(**options)`` and load a safetensors state dict into it (strictly)."""
    model = import_factory(spec)(**(options or {}))
    if not isinstance(model, nn.Module):
        raise ConfigError(f"teacher.factory {spec!r} returned {type(model).__name__}, not an nn.Module")
    if weights is not None:
        state = load_safetensors_state(weights)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise CheckpointError(f"{weights}: weights do not fit {spec}: {str(e).splitlines()[0]}") from None
    if features:
        from kdlab.models.contract import features_of

        try:
            model = features_of(model, features)
        except KeyError as e:
            raise ConfigError(f"teacher.features: {e.args[0]}") from None
    return model.eval()


def load_torchscript(path: str | Path) -> nn.Module:
    """``torch.jit.load`` on CPU. A TorchScript file is a program: load only files you trust."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"teacher.torchscript: file {p} not found")
    try:
        return torch.jit.load(str(p), map_location="cpu").eval()
    except Exception as e:
        raise CheckpointError(f"{p} is not a TorchScript file: {str(e).splitlines()[0]}") from None


class HFLogits(nn.Module):
    """A Hugging Face ``*For…Classification`` model speaking kdlab's Outputs.

    Dict inputs (``input_ids``, ``attention_mask``…) are passed as keyword arguments; a tensor goes
    in as ``pixel_values`` (images) or ``input_ids`` (integer tokens). ``pooled`` is the last hidden
    state of the first token (CLS), or the spatial mean for convolutional models.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Inputs) -> Outputs:
        if isinstance(x, dict):
            kwargs = dict(x)
        else:
            kwargs = {"pixel_values" if x.is_floating_point() else "input_ids": x}
        out = self.model(**kwargs, output_hidden_states=True)
        feats: dict[str, Tensor] = {}
        hidden = getattr(out, "hidden_states", None)
        last = hidden[-1] if hidden else None
        if last is not None and last.dim() == 3:  # [B, L, D]: tokens or patches; the first is CLS
            feats["pooled"] = last[:, 0]
        elif last is not None and last.dim() == 4:  # [B, C, H, W]: convolutional stages
            feats["pooled"] = last.mean((2, 3))
        return Outputs(out.logits, feats)


def load_hf(path: str | Path) -> nn.Module:
    """A local transformers model directory (``config.json`` + ``model.safetensors``), offline.

    The class comes from ``config.json``'s ``architectures`` and must produce logits
    (``BertForSequenceClassification``, ``ViTForImageClassification``…).
    """
    p = Path(path)
    if not (p / "config.json").is_file():
        raise ConfigError(f"teacher.hf: {p} is not a transformers model directory (no config.json)")
    try:
        import transformers
    except ModuleNotFoundError:
        raise ConfigError("teacher.hf needs the transformers package: pip install transformers") from None
    archs = json.loads((p / "config.json").read_text()).get("architectures") or []
    cls = next((getattr(transformers, a) for a in archs if hasattr(transformers, a)), None)
    if cls is None:
        raise ConfigError(f"teacher.hf: {p}/config.json names no transformers class ({archs or 'architectures missing'})")
    if not any(k in cls.__name__ for k in ("Classification", "LMHead", "ForCausalLM", "ForMaskedLM")):
        raise IncompatibleError(f"teacher.hf: {cls.__name__} has no classification head (no logits); save the model "
                                f"with one, e.g. AutoModelForSequenceClassification")
    model = cls.from_pretrained(str(p), local_files_only=True, use_safetensors=True)
    return HFLogits(model).eval()


# ---------------------------------------------------------------- dispatch from a TeacherConfig

def _given(t: Any) -> list[str]:
    return [s for s in SOURCES if getattr(t, s, None)]


def is_external(t: Any) -> bool:
    """Whether a TeacherConfig names one of the sources handled here."""
    return any(getattr(t, s, None) for s in ("factory", "torchscript", "onnx", "hf"))


def teacher_from_source(t: Any, data: Any) -> Teacher:
    """A Teacher from ``teacher.factory``/``torchscript``/``onnx``/``hf`` (a TeacherConfig)."""
    given = _given(t)
    if len(given) != 1:
        raise ConfigError(f"teacher: give exactly one source, not {' + '.join(given)}")
    source = given[0]
    if t.weights and source not in ("factory", "model"):
        raise ConfigError(f"teacher.weights goes with teacher.factory or teacher.model, not teacher.{source}")
    transform = None
    if len(data.input_shape) == 3:
        transform = input_transform(data.train.mean, data.train.std, t.mean, t.std)
    elif t.mean is not None or t.std is not None:
        raise ConfigError("teacher.mean/std apply to image data only")
    if source == "onnx":
        from kdlab.teachers.onnx import OnnxTeacher

        teacher: Teacher = OnnxTeacher(t.onnx, transform)
    elif source == "factory":
        teacher = FrozenTeacher(load_factory_model(t.factory, t.weights, t.options, t.features), transform)
    elif source == "torchscript":
        teacher = FrozenTeacher(load_torchscript(t.torchscript), transform)
    else:
        teacher = FrozenTeacher(load_hf(t.hf), transform)
    check_teacher(teacher, data, f"teacher.{source} {getattr(t, source)}")
    return teacher


def check_teacher(teacher: Teacher, data: Any, where: str) -> None:
    """Run the teacher on two validation samples: it must give ``[B, num_classes]`` logits."""
    split = data.val if len(data.val) else data.train
    idx = torch.arange(min(2, len(split)))
    try:
        out = teacher(Batch(split.gather(idx)))
    except Exception as e:
        raise IncompatibleError(f"{where} fails on inputs of shape {(len(idx), *data.input_shape)}: "
                                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    logits = out.logits
    if logits.dim() != 2 or logits.shape[1] != data.num_classes:
        raise IncompatibleError(f"{where} gives logits of shape {tuple(logits.shape)} but dataset {data.name!r} "
                                f"has {data.num_classes} classes")


def source_of_path(path: str | Path) -> str | None:
    """Which external source a bare path is: ``onnx`` (``.onnx``), ``torchscript`` (``.pt``, ``.ts``,
    ``.torchscript``), ``hf`` (a directory with ``config.json``); None for anything else (a kdlab checkpoint)."""
    p = Path(path)
    if p.suffix == ".onnx":
        return "onnx"
    if p.suffix in (".pt", ".ts", ".torchscript") and p.is_file():
        return "torchscript"
    if p.is_dir() and (p / "config.json").is_file():
        return "hf"
    return None


def teacher_from_path(path: str | Path, data: Any) -> Teacher:
    """``--teacher teacher.onnx`` / ``teacher.pt`` / ``hf_dir``: the matching external teacher."""
    from types import SimpleNamespace

    source = source_of_path(path)
    if source is None:
        raise ConfigError(f"{path} is not an ONNX file, a TorchScript file or a transformers directory")
    fields = {s: None for s in SOURCES} | {"weights": None, "options": {}, "features": {}, "mean": None, "std": None}
    return teacher_from_source(SimpleNamespace(**{**fields, source: str(path)}), data)
