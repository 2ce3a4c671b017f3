import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from kdlab.cli.main import _register, app

COMMANDS = ["mutual", "self-distill", "assistant", "multi-teacher", "amalgamate", "unlabeled", "lifelong",
            "cross-modal", "lm-distill", "data-free", "quantize"]
_register()
runner = CliRunner()


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_has_examples(cmd):
    r = runner.invoke(app, [cmd, "--help"])
    assert r.exit_code == 0, r.output
    assert "Examples" in r.output and f"kdlab {cmd}" in r.output


def test_lifelong_json(tmp_path):
    r = runner.invoke(app, ["lifelong", "--model", "mlp_tiny", "--old", "0-4", "--data", "digits", "--epochs", "1",
                            "--batch-size", "64", "--quiet", "--json", "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert set(res["extra"]) >= {"lwf", "finetune", "before"} and 0 <= res["test"]["acc"] <= 1


def test_user_error_is_one_line_exit_2(tmp_path):
    p = subprocess.run([sys.executable, "-m", "kdlab", "amalgamate", "--split", "0-4", "--split", "4-9", "--data",
                        "digits", "--epochs", "1", "--quiet"], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert p.returncode == 2, p.stderr
    assert "disjoint" in p.stderr and "Traceback" not in p.stderr
