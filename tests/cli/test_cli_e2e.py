"""End-to-end CLI runs on real data (digits; Fashion-MNIST subset when its files are present)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

KDLAB = [sys.executable, "-m", "kdlab"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def kdlab(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([*KDLAB, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"kdlab {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def test_train_distill_eval_compare_on_digits(tmp_path):
    kdlab("train", "--data", "digits", "--model", "cnn_small", "--epochs", "6", "--out", "t", "--quiet",
          "train.batch_size=64", cwd=tmp_path)
    kdlab("distill", "--teacher", "t/best", "--student", "mlp_tiny", "--data", "digits", "--epochs", "6",
          "--out", "s", "--quiet", "train.batch_size=64", cwd=tmp_path)
    run = tmp_path / "s"
    for f in ("config.yaml", "metrics.jsonl", "best.safetensors", "best.json", "last.safetensors", "last.json",
              "summary.json", "state.pt"):
        assert (run / f).is_file(), f
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test"]["acc"] > 0.8 and summary["epochs"] == 6
    cfg = (run / "config.yaml").read_text()
    assert "name: kd" in cfg and "checkpoint: t/best" in cfg
    ev = json.loads(kdlab("eval", "s/best", "--json", cwd=tmp_path).stdout)
    assert ev["acc"] == pytest.approx(summary["test"]["acc"])
    out = kdlab("compare", "--teacher", "t/best", "--student", "kd=s/best", "--out", "cmp", cwd=tmp_path).stdout
    assert "teacher" in out and "MFLOPs" in out
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert rows[0]["params"] > rows[1]["params"] and rows[1]["speedup"] > 0


@pytest.mark.parametrize("args,needle", [
    (["train", "train.epoch=3"], "did you mean 'train.epochs'"),
    (["distill", "--teacher", "nope/best", "--student", "mlp_tiny", "--data", "digits"], "nope/best"),
    (["train", "--model", "resnet21", "--data", "digits"], "unknown model 'resnet21'"),
    (["train", "--data", "digitz"], "unknown dataset 'digitz'"),
    (["eval", "missing/best"], "not found"),
])
def test_user_errors_are_one_line_exit_2(tmp_path, args, needle):
    p = kdlab(*args, cwd=tmp_path, check=False)
    assert p.returncode == 2, p.stderr
    assert needle in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_fashion_mnist_subset(tmp_path):
    try:
        from kdlab.data.fashion_mnist import find_dir

        find_dir(None)
    except Exception:
        pytest.skip("Fashion-MNIST IDX files not present")
    kdlab("train", "--data", "fashion-mnist", "--model", "cnn_tiny", "--epochs", "2", "--out", "t", "--quiet",
          "data.subset=3000", cwd=tmp_path)
    kdlab("distill", "--teacher", "t/best", "--student", "mlp_tiny", "--data", "fashion-mnist", "--epochs", "2",
          "--out", "s", "--quiet", "data.subset=3000", cwd=tmp_path)
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["test"]["acc"] > 0.5
