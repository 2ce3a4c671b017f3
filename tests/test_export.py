"""`kdlab export`: ONNX + TorchScript (+ int8) that reproduce the PyTorch student on real inputs."""
import json

import numpy as np
import pytest
import torch

from kdlab.api import load_model, run
from kdlab.config import load_config
from kdlab.data import load_data


def _train(out, model, epochs):
    cfg = load_config(base={"data": {"name": "digits"}, "student": {"name": model},
                            "train": {"epochs": epochs, "batch_size": 64},
                            "out": str(out), "report": False})
    return run(cfg, command="train", data=load_data("digits"), progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    _train(root / "teacher", "cnn_tiny", 2)
    student = _train(root / "student", "cnn_tiny", 3)
    return root, student


def test_export_cli_writes_checked_deployable_files(runs):
    from typer.testing import CliRunner

    from kdlab.cli.main import _register, app

    root, student = runs
    _register()
    out = root / "deploy"
    res = CliRunner().invoke(app, ["export", str(root / "student" / "best"), "--out", str(out), "--int8",
                                   "--teacher", str(root / "teacher" / "best")])
    assert res.exit_code == 0, res.output
    assert "checked on 180 test samples of digits" in res.output and "teacher (eager)" in res.output
    for f in ("model.onnx", "model.pt", "model_int8.onnx", "model_int8.pt", "export.json"):
        assert (out / f).is_file(), f
    manifest = json.loads((out / "export.json").read_text())
    rows = {r["name"]: r for r in manifest["results"]}
    assert list(rows)[0] == "teacher (eager)" and rows["teacher (eager)"]["speedup"] == pytest.approx(1.0)
    for name in ("onnx (onnxruntime)", "torchscript"):
        assert rows[name]["max_abs_diff"] < 1e-4 and rows[name]["agreement"] == 1.0
        assert rows[name]["acc"] == pytest.approx(rows["pytorch (eager)"]["acc"])
    for name in ("onnx int8", "torchscript int8"):
        assert rows[name]["agreement"] >= 0.9 and rows[name]["latency_b1_ms"] > 0
    assert rows["onnx int8"]["size_kb"] < rows["onnx (onnxruntime)"]["size_kb"]
    assert manifest["int8_method"].startswith("kdlab post-training quantisation")

    # deploy as a consumer would: raw test images + export.json's pre-processing + onnxruntime only
    import onnxruntime as ort

    pre = manifest["preprocess"]
    d = load_data("digits")
    raw = d.test.x.float().numpy() * 16  # sklearn's own pixels, 0..16
    mean = np.asarray(pre["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(pre["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    x = ((raw * pre["scale"] - mean) / std).astype(np.float32)
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = sess.run(["logits"], {"input": x})[0]
    assert logits.shape == (len(x), 10)
    assert float((logits.argmax(1) == d.test.y.numpy()).mean()) == pytest.approx(student.test["acc"])
    model, _ = load_model(root / "student" / "best")
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).logits.numpy()
    assert np.abs(logits - ref).max() < 1e-4
    ts = torch.jit.load(str(out / "model.pt"))
    with torch.no_grad():
        np.testing.assert_allclose(ts(torch.from_numpy(x[:7])).numpy(), ref[:7], atol=1e-5)


def test_export_help_and_errors(runs, tmp_path):
    from typer.testing import CliRunner

    from kdlab.cli.main import _register, app

    _register()
    res = CliRunner().invoke(app, ["export", "--help"])
    assert "kdlab export runs/kd/best --out deploy --int8 --teacher runs/teacher/best" in res.output
    from kdlab.errors import CheckpointError
    from kdlab.export import export

    with pytest.raises(CheckpointError, match="not found"):
        export(tmp_path / "missing" / "best", tmp_path / "out")


def test_int8_warnings_name_variants_that_do_not_pay():
    from kdlab.export import Artifact, int8_warnings

    rows = [Artifact("onnx (onnxruntime)", None, 100.0, 0.20, 2.0), Artifact("onnx int8", None, 30.0, 0.30, 1.0),
            Artifact("torchscript", None, 120.0, 0.5, 4.0), Artifact("torchscript int8", None, 125.0, 0.4, 3.0)]
    w = int8_warnings(rows, [("onnx int8", "onnx (onnxruntime)"), ("torchscript int8", "torchscript"),
                             ("absent", "onnx (onnxruntime)")])
    assert len(w) == 2
    assert w[0].startswith("onnx int8 does not pay") and "1.5× slower at batch 1 (0.300 vs 0.200 ms)" in w[0]
    assert "large batch" not in w[0] and "smaller" not in w[0]
    assert w[1].startswith("torchscript int8") and "not smaller (125.0 vs 120.0 KB)" in w[1] and "slower" not in w[1]
    rows[1].latency_b1_ms = 0.1
    assert int8_warnings(rows[:2], [("onnx int8", "onnx (onnxruntime)")]) == []
