"""Loaders for teachers from outside kdlab: your own model code, TorchScript, Hugging Face.

Each returns an ``nn.Module``; :func:`kdlab.teachers.resolve.resolve_teacher` wraps it as a
:class:`kdlab.core.Teacher` (input re-normalisation, checks against the data). Weights are read
from safetensors files (never from pickles); the only sources that bring code are the ones you name
explicitly: a ``package.module:factory`` you wrote, or a TorchScript file (which holds a compiled
program: load only files you trust). ONNX files are run by :class:`kdlab.teachers.onnx.OnnxTeacher`.
"""
from __future__ import annotations

import importlib
import json
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from kdlab.core import Inputs, Outputs
from kdlab.errors import CheckpointError, ConfigError, IncompatibleError


def _first_lines(e: BaseException, n: int = 1, limit: int = 300) -> str:
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    return " ".join(lines[:n])[:limit] or type(e).__name__


def load_safetensors_into(model: nn.Module, weights: str | Path, name: str) -> nn.Module:
    """Load the safetensors state dict ``weights`` into ``model`` (strictly); ``name`` names the
    model in errors. Any other format is refused unread (a pickle is never unpickled)."""
    from safetensors.torch import load_file

    p = Path(weights)
    if not p.is_file():
        raise ConfigError(f"teacher.weights: file {p} not found")
    if p.suffix != ".safetensors":
        raise ConfigError(f"teacher.weights: {p} is not a .safetensors file (pickled checkpoints are refused: "
                          "convert with safetensors.torch.save_file(model.state_dict(), 'teacher.safetensors'))")
    try:
        state = load_file(str(p))
    except Exception as e:  # safetensors raises its own error types (a pickle renamed .safetensors lands here)
        raise CheckpointError(f"teacher.weights {p} cannot be loaded into {name!r}: not a readable safetensors "
                              f"file ({_first_lines(e)})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"teacher.weights {p} cannot be loaded into {name!r}: the weights do not fit "
                              f"({_first_lines(e, 2)})") from None
    return model


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
        load_safetensors_into(model, weights, spec)
    if features:
        from kdlab.models.contract import features_of

        try:
            model = features_of(model, features)
        except KeyError as e:
            raise ConfigError(f"teacher.features: {e.args[0]}") from None
    return model.eval()


def load_torchscript(path: str | Path) -> nn.Module:
    """``torch.jit.load`` on CPU. A TorchScript file is a program: load only files you trust.

    A ``torch.save`` file (a pickle, often named ``.pt`` too) is refused without being read. A
    traced program's example inputs, stored in the file by ``torch.jit.trace``, are restored into its
    graph, so :func:`traced_input_shape` can tell the input shape it was traced with.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"teacher.torchscript: file {p} not found")
    names: list[str] = []
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            names = []
        if names and not any("/code/" in n for n in names):
            raise CheckpointError(f"{p} is a torch.save pickle, not a TorchScript program, and pickles are never "
                                  f"loaded: save the model with torch.jit.trace(model, x).save(path), or its weights "
                                  f"with safetensors and use teacher.model or teacher.factory + teacher.weights")
    restore = any(n.endswith("/traced_inputs.pkl") for n in names)
    try:
        try:
            module = torch.jit.load(str(p), map_location="cpu", _restore_shapes=restore)
        except TypeError:  # a torch without _restore_shapes
            module = torch.jit.load(str(p), map_location="cpu")
    except Exception as e:
        raise CheckpointError(f"{p} is not a TorchScript file: {_first_lines(e)}") from None
    return module.eval()


def traced_input_shape(module: nn.Module) -> tuple[int, ...] | None:
    """The per-sample shape of the first input ``module`` was traced with (batch dimension dropped),
    when :func:`load_torchscript` restored it; None for scripted programs and files without it."""
    graph = getattr(module, "graph", None)
    try:
        args = list(graph.inputs())[1:] if graph is not None else []  # the first input is the module itself
        t = args[0].type() if args else None
        if t is None or t.kind() != "TensorType" or t.dim() is None:
            return None
        sizes = t.varyingSizes()
    except (RuntimeError, AttributeError, IndexError):
        return None
    if not sizes or any(s is None for s in sizes):
        return None
    return tuple(int(s) for s in sizes[1:])


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
        raise ConfigError(f"teacher.hf: {p}/config.json names no transformers class "
                          f"({archs or 'architectures missing'})")
    if not any(k in cls.__name__ for k in ("Classification", "LMHead", "ForCausalLM", "ForMaskedLM")):
        raise IncompatibleError(f"teacher.hf: {cls.__name__} has no classification head (no logits); save the model "
                                f"with one, e.g. AutoModelForSequenceClassification")
    model = cls.from_pretrained(str(p), local_files_only=True, use_safetensors=True)
    return HFLogits(model).eval()
