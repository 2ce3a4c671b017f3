"""Models from a name and the data they will see, or from a kdlab checkpoint.

* :func:`model_for_data`: a registered model sized for a dataset (its classes, input channels and
  size; vector data goes to models that flatten their input).
* :func:`load_model`: a kdlab checkpoint (``run/best`` = ``best.safetensors`` + ``best.json``)
  rebuilt from the model spec recorded in its metadata. Weights are read from safetensors only:
  nothing is ever unpickled.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from kdlab.errors import CheckpointError, ConfigError, KDLabError
from kdlab.models import create_model
from kdlab.store.checkpoint import load_weights

if TYPE_CHECKING:
    from kdlab.core import DataInfo
    from kdlab.data import DataSplits


def model_for_data(name: str, data: "DataSplits | DataInfo", **options: Any) -> nn.Module:
    """``create_model(name, ...)`` for ``data``'s classes and input shape (``[C, H, W]``, ``[H, W]``
    or a vector ``[D]``); a model that cannot be built with ``options`` is a ConfigError. Token data
    (a ``vocab_size``) also sizes the embeddings of a model that takes ``vocab_size``."""
    vocab = getattr(data, "vocab_size", None)
    if vocab is not None and "vocab_size" not in options and _takes(name, "vocab_size"):
        options = {**options, "vocab_size": vocab}
    shape = tuple(data.input_shape)
    if len(shape) == 1:  # vector data [D]: only models that flatten their input apply
        return _create(name, data.num_classes, in_channels=shape[0], image_size=1, **options)
    in_ch = shape[0] if len(shape) == 3 else 1
    return _create(name, data.num_classes, in_channels=in_ch, image_size=shape[-1], **options)


def _takes(name: str, option: str) -> bool:
    import inspect

    from kdlab.models import MODELS

    return option in inspect.signature(MODELS.get(name)).parameters


def _create(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    try:
        return create_model(name, num_classes, **kwargs)
    except (TypeError, ValueError, RuntimeError) as e:  # option values the model cannot be built with
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"model {name!r} cannot be built for {num_classes} classes with {kwargs}: {msg}") from None


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a kdlab checkpoint (``run/best`` or ``run/best.safetensors``) from its metadata:
    ``(model in eval mode, metadata)``."""
    state, meta = load_weights(path)
    spec = meta.get("model")
    if not spec:
        raise CheckpointError(f"{path}: metadata has no model spec; load it with a model factory instead")
    spec = dict(spec)
    try:
        model = create_model(spec.pop("name"), **spec)
    except (TypeError, ValueError, RuntimeError, KeyError, KDLabError) as e:
        raise CheckpointError(f"{path}: its metadata names a model that cannot be built ({e})") from None
    if meta.get("quant"):  # a fake-quantised student (kdlab quantize): rebuild the prepared graph
        from kdlab.models.quant import prepare_qat

        model = prepare_qat(model, activations=meta["quant"].get("activations", "u8"))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the model: {str(e).splitlines()[0]}") from None
    return model.eval(), meta
