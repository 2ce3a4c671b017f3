"""`kdlab quantize` on digits: fp32 KD student → PTQ → QAT+KD int8 student → QDQ int8 ONNX that ONNX
Runtime runs with its int8 kernels and that agrees with the PyTorch QAT model."""
import json

import pytest

from kdlab.api import evaluate, load_model, run
from kdlab.config import load_config
from kdlab.errors import IncompatibleError
from kdlab.schemes import run_scheme


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, digits):
    root = tmp_path_factory.mktemp("quantize")
    t = load_config(base={"data": {"name": "digits"}, "student": {"name": "cnn_small"},
                          "train": {"epochs": 3, "batch_size": 64}, "out": str(root / "teacher"), "report": False})
    run(t, command="train", data=digits, progress=False)
    cfg = load_config(base={"data": {"name": "digits"}, "train": {"epochs": 3, "batch_size": 64},
                            "out": str(root / "q"), "report": False,
                            "scheme": {"name": "quantize", "student": "cnn_tiny", "qat_epochs": 2, "calibration": 256,
                                       "teacher": str(root / "teacher" / "best")}})
    return root, run_scheme("quantize", cfg, data=digits, progress=False)


def test_runs_every_stage_and_records_the_baselines(quantized):
    root, r = quantized
    e = r.extra
    assert (root / "q" / "fp32" / "best.safetensors").is_file() and (root / "q" / "best.safetensors").is_file()
    assert 0.5 < e["fp32"]["acc"] <= 1 and 0.5 < e["ptq"]["acc"] <= 1 and e["activations"] == "u8"
    saved = json.loads((root / "q" / "deploy" / "quantized.json").read_text())
    assert saved["deploy"]["qat_int8"]["acc"] == pytest.approx(r.test["acc"], abs=0.02)
    # the checkpoint rebuilds the fake-quantised student and scores what the run reported
    model, meta = load_model(root / "q" / "best")
    assert meta["quant"]["bits"] == 8
    assert evaluate(root / "q" / "best")["acc"] == pytest.approx(r.test["acc"], abs=1e-6)


def test_int8_onnx_agrees_with_the_pytorch_qat_model_and_is_small(quantized):
    _, r = quantized
    d = r.extra["deploy"]
    assert d["qat_int8"]["agreement_with_pytorch"] >= 0.995
    assert d["ptq_int8"]["agreement_with_pytorch"] >= 0.995
    assert d["qat_int8"]["acc"] == pytest.approx(r.test["acc"], abs=0.006)  # ≤ 1 of 180 samples differs
    # cnn_tiny holds 6k weights, so graph overhead weighs; resnet8's file is 0.30× (benchmarks/quantized.md)
    assert d["qat_int8"]["size_kb"] <= 0.55 * d["fp32"]["size_kb"]
    assert d["fp32"]["agreement_with_pytorch"] == 1.0


def test_onnxruntime_runs_the_int8_graph_with_int8_kernels(quantized, tmp_path):
    import onnx
    import onnxruntime as ort

    root, _ = quantized
    path = root / "q" / "deploy" / "model_int8.onnx"
    g = onnx.load(str(path)).graph
    weights = {i.name: i.data_type for i in g.initializer}
    dq_weights = [n.input[0] for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] in weights]
    assert dq_weights and all(weights[w] == onnx.TensorProto.INT8 for w in dq_weights if "weight" in w)
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert ops.count("QLinearConv") == 3 and "Conv" not in ops  # cnn_tiny: three convolutions, all int8


def test_a_model_it_cannot_quantise_is_refused(tmp_path, digits):
    cfg = load_config(base={"data": {"name": "digits"}, "train": {"epochs": 1, "batch_size": 64},
                            "out": str(tmp_path / "q"), "report": False,
                            "scheme": {"name": "quantize", "student": "vit_tiny"}})
    with pytest.raises(IncompatibleError, match="cannot quantise"):
        run_scheme("quantize", cfg, data=digits, progress=False)


def test_export_of_a_quantised_checkpoint_keeps_its_trained_quantisation(quantized, tmp_path):
    from kdlab.export import export

    root, r = quantized
    res = export(root / "q" / "best", tmp_path / "deploy", int8=True, samples=180)
    assert res.manifest["int8_method"].startswith("the checkpoint's own")
    assert res.get("onnx int8").agreement >= 0.995  # against the fake-quantised PyTorch model
    assert res.get("onnx int8").acc == pytest.approx(r.test["acc"], abs=0.006)
