"""What a user sees of the objective on the command line and in the API: the resolved weights are
written into the run's config.yaml, and eval/compare find a checkpoint's data by themselves."""
import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import kdlab
from kdlab.cli.main import _register, app

_register()


def cli(*args):
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, (r.output, r.exception)
    return r


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("obj")
    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    x = (rng.normal(size=(300, 1, 8, 8)) + y[:, None, None, None]).astype(np.float32)
    np.savez(d / "data.npz", x=x, y=y)
    cli("train", "--data", "npz", "--root", d / "data.npz", "--model", "cnn_tiny", "--epochs", 1,
        "--batch-size", 64, "--out", d / "t", "--quiet", "report=false")
    return d


def _methods(run):
    return {m["name"]: m for m in yaml.safe_load((run / "config.yaml").read_text())["methods"]}


def test_distill_method_kd_without_alpha_is_hintons_mix(work):
    cli("distill", "--teacher", work / "t" / "best", "--student", "mlp_tiny", "--data", "npz", "--root",
        work / "data.npz", "--method", "kd", "--epochs", 1, "--out", work / "kd", "--quiet", "report=false")
    m = _methods(work / "kd")
    assert m["ce"]["weight"] == 0.1 and m["kd"]["weight"] == 0.9 and m["kd"]["T"] == 4.0


def test_api_at_plus_kd_keeps_at_at_its_paper_weight(work):
    r = kdlab.distill(str(work / "t" / "best"), "cnn_tiny", kdlab.api.load_data("npz", root=str(work / "data.npz")),
                      method="at+kd", epochs=1, out=str(work / "atkd"), batch_size=64)
    m = _methods(work / "atkd")
    assert m["at"]["weight"] == 1000.0 and m["kd"]["weight"] == 0.9 and m["ce"]["weight"] == 0.1
    assert r.config is not None and r.config["methods"][1]["weight"] == 1000.0


def test_api_fitnet_plus_kd_with_T_trains(work):
    kdlab.distill(str(work / "t" / "best"), "cnn_tiny", kdlab.api.load_data("npz", root=str(work / "data.npz")),
                  method="fitnet+kd", T=4, epochs=1, out=str(work / "fk"), batch_size=64)
    m = _methods(work / "fk")
    assert m["kd"]["T"] == 4 and "T" not in m["fitnet"]


def test_eval_and_compare_find_an_npz_checkpoints_data(work):
    r = cli("eval", work / "t" / "best", "--json")
    recorded = json.loads((work / "t" / "summary.json").read_text())["test"]["acc"]
    assert json.loads(r.output)["acc"] == pytest.approx(recorded)
    r = cli("compare", "--teacher", work / "t" / "best", "--student", f"kd={work / 'kd' / 'best'}")
    assert "npz test set" in r.output
