"""The run lifecycle (kdlab.engine.run): one run directory layout, a resume that refuses a changed
config, epochs that may change only when the schedule stays exact, training time over resumes, and
data provenance recorded in every checkpoint and checked against a teacher."""
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kdlab.cli.main import _register, app
from kdlab.config import load_config
from kdlab.data import load_data_spec
from kdlab.errors import ConfigError, DataError
from kdlab.schemes.offline import run_config
from kdlab.store.checkpoint import load_meta

_register()
LAYOUT = {"config.yaml", "metrics.jsonl", "best.safetensors", "best.json", "last.safetensors", "last.json",
          "state.pt", "summary.json"}


def _cfg(out, **over):
    base = {"data": {"name": "digits"}, "student": {"name": "mlp_tiny"}, "train": {"epochs": 2, "batch_size": 64},
            "out": str(out), "report": False, "methods": [{"name": "ce"}]}
    for k, v in over.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return load_config(base=base)


def _rows(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(l).items() if k != "epoch_seconds"}
            for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("t")
    run_config(_cfg(d / "t", student={"name": "cnn_tiny"}), command="train", progress=False)
    return d / "t"


def test_every_run_has_the_same_layout_and_records_its_data(teacher):
    assert LAYOUT <= {p.name for p in teacher.iterdir()}
    prov = load_meta(teacher / "best")["data_provenance"]
    assert prov["name"] == "digits" and prov["split_seed"] == 0 and not prov["official_test"]
    assert len(prov["train_rows_fingerprint"]) == 16 and prov["source_fingerprint"]


def test_resume_with_another_method_and_lr_is_refused_naming_the_keys(teacher, tmp_path):
    out = str(tmp_path / "kd")
    r = cli("distill", "--teacher", str(teacher / "best"), "--student", "mlp_tiny", "--data", "digits", "--epochs", "2",
            "--batch-size", "64", "--out", out, "--quiet", "report=false")
    assert r.exit_code == 0, r.output
    before = (Path(out) / "metrics.jsonl").read_text(), (Path(out) / "config.yaml").read_text()
    r = cli("distill", "--teacher", str(teacher / "best"), "--student", "mlp_tiny", "--data", "digits", "--epochs", "2",
            "--batch-size", "64", "--out", out, "--quiet", "report=false", "--resume", "--method", "dkd", "--lr", "0.5")
    assert isinstance(r.exception, ConfigError), r.output
    msg = str(r.exception)
    assert "\n" not in msg and "train.lr (0.05 -> 0.5)" in msg and "methods.1.name ('kd' -> 'dkd')" in msg
    # nothing was touched: no mixed metrics, the config still says what the run is
    assert ((Path(out) / "metrics.jsonl").read_text(), (Path(out) / "config.yaml").read_text()) == before
    r = cli("distill", "--teacher", str(teacher / "best"), "--student", "cnn_tiny", "--data", "digits", "--epochs", "2",
            "--batch-size", "64", "--out", out, "--quiet", "report=false", "--resume")
    assert isinstance(r.exception, ConfigError) and "student.name ('mlp_tiny' -> 'cnn_tiny')" in str(r.exception)


def test_more_epochs_on_resume_cosine_refused_constant_exact(tmp_path):
    run_config(_cfg(tmp_path / "cos"), command="train", progress=False)
    with pytest.raises(ConfigError, match="cosine learning-rate schedule spans all epochs"):
        run_config(_cfg(tmp_path / "cos", train={"epochs": 4}), command="train", progress=False, resume=True)
    const = {"epochs": 2, "lr_schedule": "constant"}
    run_config(_cfg(tmp_path / "c", train=const), command="train", progress=False)
    r = run_config(_cfg(tmp_path / "c", train={**const, "epochs": 4}), command="train", progress=False, resume=True)
    full = run_config(_cfg(tmp_path / "full", train={**const, "epochs": 4}), command="train", progress=False)
    assert _rows(tmp_path / "c") == _rows(tmp_path / "full")
    assert r.test == full.test
    # fewer epochs than already trained cannot be honoured
    with pytest.raises(ConfigError, match="4 epochs are already trained"):
        run_config(_cfg(tmp_path / "c", train={**const, "epochs": 3}), command="train", progress=False, resume=True)


def test_train_seconds_counts_the_resumed_epochs_too(tmp_path):
    const = {"epochs": 2, "lr_schedule": "constant"}
    run_config(_cfg(tmp_path / "c", train=const), command="train", progress=False)
    run_config(_cfg(tmp_path / "c", train={**const, "epochs": 3}), command="train", progress=False, resume=True)
    rows = [json.loads(l) for l in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["epochs"] == 3
    assert summary["train_seconds"] >= 0.95 * sum(r["epoch_seconds"] for r in rows)


def test_split_follows_the_data_seed_not_the_training_seed():
    a = load_data_spec(_cfg("x", seed=0).data)
    b = load_data_spec(_cfg("x", seed=5).data)
    c = load_data_spec(_cfg("x", data={"split_seed": 1}).data)
    assert a.test_rows is not None and (a.test_rows == b.test_rows).all() and not (a.test_rows == c.test_rows).all()


def test_teacher_trained_on_the_students_test_samples_is_refused(tmp_path):
    run_config(_cfg(tmp_path / "t1", data={"split_seed": 1}), command="train", progress=False)
    cfg = _cfg(tmp_path / "s", methods=[{"name": "ce", "weight": 0.1}, {"name": "kd"}],
               teacher={"checkpoint": str(tmp_path / "t1" / "best")})
    with pytest.raises(DataError, match=r"trained on \d+ of this run's 180 test samples .*split_seed=1"):
        run_config(cfg, progress=False)
    ok = cfg.model_copy(update={"data": cfg.data.model_copy(update={"split_seed": 1})})
    assert run_config(ok, progress=False).test["acc"] > 0


def _npz(path: Path, seed: int) -> str:
    rng = np.random.default_rng(seed)
    y = np.arange(200) % 4
    x = (rng.normal(size=(200, 6)) + y[:, None]).astype(np.float32)
    np.savez(path, x=x, y=y)
    return str(path)


def test_teacher_of_another_dataset_of_the_same_shape_warns_and_eval_finds_the_data(tmp_path):
    a, b = _npz(tmp_path / "a.npz", 0), _npz(tmp_path / "b.npz", 1)
    run_config(_cfg(tmp_path / "t", data={"name": "npz", "root": a}), command="train", progress=False)
    cfg = _cfg(tmp_path / "s", data={"name": "npz", "root": b}, methods=[{"name": "ce"}, {"name": "kd"}],
               teacher={"checkpoint": str(tmp_path / "t" / "best")})
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        run_config(cfg, progress=False)
    assert any("was trained on other data" in str(x.message) for x in w)
    # the checkpoint remembers its data: eval needs no --data (it used to ask for a flag that does not exist)
    r = cli("eval", str(tmp_path / "t" / "best"), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["acc"] == pytest.approx(
        json.loads((tmp_path / "t" / "summary.json").read_text())["test"]["acc"])


def test_a_run_from_before_a_key_existed_resumes_when_the_key_keeps_its_default():
    from kdlab.engine.run import _with_defaults, config_differences

    old = {"data": {"name": "digits"}, "train": {"epochs": 2}}
    from kdlab.data import DataSpec
    from kdlab.engine.schedule import Schedule

    new = {"data": DataSpec(name="digits").model_dump(mode="json"), "train": Schedule(epochs=2).model_dump(mode="json")}
    assert config_differences(_with_defaults(old), new) == []  # e.g. data.teacher_view, train.precision
    changed = {"data": {**new["data"], "teacher_view": "clean"}, "train": {**new["train"], "precision": "bf16"}}
    assert config_differences(_with_defaults(old), changed) == ["data.teacher_view", "train.precision"]
    # an optional section added since (e.g. adversarial:) and left off is no change; set, it is one
    assert config_differences(_with_defaults(old), {**new, "adversarial": None}) == []
    assert config_differences(_with_defaults(old), {**new, "adversarial": {"attack": "pgd"}}) == ["adversarial"]
