"""`kdlab init`: a commented starter config that loads, covers the schema, and runs."""
import re

import pytest
import yaml
from typer.testing import CliRunner

from kdlab.api import run
from kdlab.cli.main import _register, app
from kdlab.config import RunConfig, TeacherConfig, TrackingConfig, load_config
from kdlab.errors import ConfigError

_register()


def invoke(*args):
    return CliRunner().invoke(app, list(args))


def test_init_writes_a_config_that_loads(tmp_path):
    path = tmp_path / "kdlab.yaml"
    res = invoke("init", str(path))
    assert res.exit_code == 0, res.output
    assert f"kdlab distill {path}" in res.output
    cfg = load_config(path)
    assert cfg.data.name == "digits" and cfg.student.name == "mlp_tiny"
    assert cfg.teacher.checkpoint == "runs/digits-teacher/best"
    assert [(m.name, m.model_dump().get("weight")) for m in cfg.methods] == [("ce", 0.1), ("kd", 0.9)]
    assert cfg.report and not cfg.tracking.tensorboard and cfg.tracking.mlflow is None
    text = path.read_text()
    # every top-level key, teacher source and tracking option is shown (set or commented)
    for key in [*RunConfig.model_fields, *TeacherConfig.model_fields, *TrackingConfig.model_fields]:
        if key == "model":  # teacher.model + weights: a registered model, documented elsewhere
            continue
        assert re.search(rf"^\s*(# )?(- )?{key}:", text, re.M), key
    # the commented teacher sources are valid once uncommented (one at a time)
    for source in ("factory", "torchscript", "onnx", "hf"):
        raw = yaml.safe_load(text)
        line = re.search(rf"^  # ({source}: \S+)", text, re.M).group(1)
        raw["teacher"] = yaml.safe_load(line)
        assert getattr(load_config(base=raw).teacher, source)
    # an existing file is kept
    res = invoke("init", str(path))
    assert res.exit_code != 0 and "--force" in str(res.exception)
    assert invoke("init", str(path), "--force", "--epochs", "3").exit_code == 0
    assert load_config(path).train.epochs == 3


def test_init_options_and_errors(tmp_path):
    p = tmp_path / "cifar.yaml"
    assert invoke("init", str(p), "--data", "cifar10", "--student", "resnet8x4", "--teacher", "runs/r32x4/best",
                  "--method", "dkd", "--out", "runs/x: y").exit_code == 0
    cfg = load_config(p)
    assert (cfg.data.name, cfg.student.name, cfg.teacher.checkpoint, cfg.out) == ("cifar10", "resnet8x4",
                                                                                  "runs/r32x4/best", "runs/x: y")
    assert [m.name for m in cfg.methods] == ["ce", "dkd"]
    res = invoke("init", str(tmp_path / "bad.yaml"), "--method", "dkdd")
    assert isinstance(res.exception, ConfigError) and "did you mean 'dkd'" in str(res.exception)
    assert not (tmp_path / "bad.yaml").exists()  # nothing written on error
    res = invoke("init", "--help")
    assert "kdlab init cifar.yaml --data cifar10" in res.output


def test_no_teacher_config_trains(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert invoke("init", "t.yaml", "--no-teacher", "--student", "mlp_tiny", "--epochs", "1").exit_code == 0
    cfg = load_config("t.yaml", ["report=false"])
    assert cfg.teacher is None and [m.name for m in cfg.methods] == ["ce"]
    r = run(cfg, command="train", progress=False)
    assert r.test["acc"] > 0.3 and (tmp_path / cfg.out / "summary.json").is_file()
    with pytest.raises(ConfigError, match="did you mean 'train.epochs'"):
        load_config("t.yaml", ["train.epoch=2"])


def test_init_scheme_writes_a_starter_for_every_scheme(tmp_path):
    from kdlab.schemes import SCHEMES, scheme_options

    assert set(SCHEMES.names()) == {"mutual", "self-distill", "assistant", "multi-teacher", "amalgamate", "unlabeled",
                                    "lifelong", "cross-modal", "lm-distill", "quantize", "data-free"}
    for name in SCHEMES.names():
        path = tmp_path / f"{name}.yaml"
        res = invoke("init", str(path), "--scheme", name)
        assert res.exit_code == 0, res.output
        cfg = load_config(path)
        opts = scheme_options(name, cfg.scheme)
        assert opts == SCHEMES.get(name).options()  # every option written, at its default
        for key in SCHEMES.get(name).options.model_fields:
            assert re.search(rf"^  {key}:", path.read_text(), re.M), (name, key)
    res = invoke("init", str(tmp_path / "x.yaml"), "--scheme", "mutal")
    assert res.exit_code != 0 and "did you mean 'mutual'" in str(res.exception)
