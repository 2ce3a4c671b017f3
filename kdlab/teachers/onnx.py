"""A black-box teacher: an ONNX file run by ONNX Runtime on CPU. Logits only (no features), so it
pairs with response-based methods (kd, dkd, dist, …); feature methods refuse it before training."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from kdlab.core import Batch, Inputs, Outputs
from kdlab.errors import CheckpointError, ConfigError


class OnnxTeacher:
    """``OnnxTeacher("teacher.onnx")(batch) -> Outputs(logits)``.

    The model's first input receives the (optionally re-normalised) image or vector tensor; dict
    inputs are matched to the model's inputs by name. The output named ``logits`` is used when
    there is one, else the first output. A model exported with a fixed batch size is fed in chunks
    of that size.
    """

    def __init__(self, path: str | Path, input_transform: Callable[[Inputs], Inputs] | None = None,
                 threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ModuleNotFoundError:
            raise ConfigError("an ONNX teacher needs onnxruntime: pip install onnxruntime") from None
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"teacher.onnx: file {p} not found")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise CheckpointError(f"{p} is not a loadable ONNX model: {str(e).splitlines()[0]}") from None
        self.path = p
        self.input_transform = input_transform
        self.inputs = self.session.get_inputs()
        outputs = [o.name for o in self.session.get_outputs()]
        self.output = "logits" if "logits" in outputs else outputs[0]
        dim0 = self.inputs[0].shape[0] if self.inputs[0].shape else None
        self.fixed_batch = dim0 if isinstance(dim0, int) and dim0 > 0 else None

    def _feeds(self, x: Inputs) -> list[dict[str, np.ndarray]]:
        if isinstance(x, dict):
            feeds = {i.name: _numpy(x[i.name], i.type) for i in self.inputs if i.name in x}
            missing = [i.name for i in self.inputs if i.name not in feeds]
            if missing:
                raise ConfigError(f"{self.path}: inputs {missing} are missing from the batch ({sorted(x)})")
        else:
            feeds = {self.inputs[0].name: _numpy(x, self.inputs[0].type)}
        n = next(iter(feeds.values())).shape[0]
        step = self.fixed_batch or n
        return [{k: v[s:s + step] for k, v in feeds.items()} for s in range(0, n, step)]

    def __call__(self, batch: Batch) -> Outputs:
        x = batch.inputs if self.input_transform is None else self.input_transform(batch.inputs)
        first = next(iter(x.values())) if isinstance(x, dict) else x
        outs = [self.session.run([self.output], feed)[0] for feed in self._feeds(x)]
        logits = torch.from_numpy(np.ascontiguousarray(np.concatenate(outs))).float()
        return Outputs(logits.to(first.device))

    def to(self, device: torch.device | str) -> "OnnxTeacher":  # runs on CPU; outputs follow the inputs
        return self


def _numpy(t: torch.Tensor, onnx_type: str) -> np.ndarray:
    a = t.detach().cpu().numpy()
    if "int64" in onnx_type:
        return a.astype(np.int64)
    if "int32" in onnx_type:
        return a.astype(np.int32)
    if "float16" in onnx_type:
        return a.astype(np.float16)
    return a.astype(np.float32)
