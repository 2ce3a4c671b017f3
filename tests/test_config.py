import pytest

from kdlab.config import dump_config, load_config
from kdlab.errors import ConfigError


def test_defaults_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data: {name: digits}\ntrain: {epochs: 3}\nmethods:\n"
                 "  - {name: ce, weight: 0.1}\n  - {name: kd, T: 4}\n")
    cfg = load_config(f, ["train.epochs=5", "methods.1.T=2", "student.name=mlp"])
    assert cfg.train.epochs == 5 and cfg.student.name == "mlp"
    assert cfg.methods[1].model_dump() == {"name": "kd", "T": 2}
    again = tmp_path / "again.yaml"
    again.write_text(dump_config(cfg))
    assert load_config(again) == cfg  # the saved resolved config reproduces the run's config


@pytest.mark.parametrize("override,needle", [
    (["train.epoch=3"], "unknown config key 'train.epoch'; did you mean 'train.epochs'"),
    (["trian.epochs=3"], "did you mean 'train'"),
    (["train.lr=-1"], "bad value for 'train.lr'"),
    (["train.optimizer=rmsprop"], "train.optimizer"),
    (["data.val_fraction=1.5"], "data.val_fraction"),
    (["seed"], "key.sub=value"),
    (["methods=[]"], "at least one method"),
])
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        load_config(overrides=override)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(lst)
