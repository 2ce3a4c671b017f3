import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from kdlab.api import scheme
from kdlab.cli.main import _register, app
from kdlab.errors import ConfigError
from kdlab.schemes.unlabeled import MixedLoader, split_labeled

from .conftest import FAST


def test_split_is_stratified_and_pool_has_no_labels(digits):
    lab, pool = split_labeled(digits, 0.05, seed=0)
    assert pool.y is None
    n = len(digits.train)
    assert len(lab.train) + len(pool) == n
    ids = torch.cat([lab.train.index, pool.index])
    assert torch.equal(ids.sort().values, torch.arange(n))
    assert set(lab.train.y.tolist()) == set(range(10)) and set(lab.val.y.tolist()) == set(range(10))
    assert abs(len(lab.train) - 0.05 * n) <= 10
    assert torch.equal(lab.train.y, digits.train.y[lab.train.index])
    assert len(lab.val) < len(digits.val) and torch.equal(lab.test.y, digits.test.y)


def test_mixed_loader_unlabeled_batches_carry_no_targets(digits):
    lab, pool = split_labeled(digits, 0.1, seed=0)
    loader = MixedLoader(lab.train, pool, 32, seed=0)
    loader.set_epoch(1)
    batches = list(loader)
    assert len(batches) == len(loader)
    labeled = [b for b in batches if b.targets is not None]
    unl = [b for b in batches if b.targets is None]
    assert labeled and unl
    lab_ids = set(lab.train.index.tolist())
    assert all(set(b.index.tolist()) <= lab_ids for b in labeled)
    assert all(not (set(b.index.tolist()) & lab_ids) for b in unl)
    for b in labeled:  # labels are those of the ids
        assert torch.equal(b.targets, digits.train.y[b.index])
    kinds = [b.targets is None for b in batches]
    assert kinds != sorted(kinds)  # interleaved, not all labeled first


def test_unlabeled_run_keeps_teacher_and_baseline_as_stages(digits, tmp_path):
    out = tmp_path / "unl"
    r = scheme("unlabeled", digits, epochs=2, out=str(out), train=FAST, teacher="mlp_tiny", student="mlp_tiny",
               labeled=0.1, baseline=True)
    e = r.extra
    assert e["labeled"] + e["pool"] == len(digits.train)
    assert e["labeled_epochs"] > 2  # step-matched: more epochs over the small labeled part
    assert 0 < e["teacher_acc"] <= 1 and 0 < e["baseline_acc"] <= 1 and r.test["acc"] > 0.2
    assert "train_kd" in r.history[-1]
    for d in (out, out / "teacher", out / "baseline"):
        assert {"config.yaml", "metrics.jsonl", "best.safetensors", "last.safetensors", "state.pt",
                "summary.json"} <= {p.name for p in d.iterdir()}, d
    teacher = json.loads((out / "teacher" / "summary.json").read_text())
    assert teacher["epochs"] == e["labeled_epochs"] and teacher["test"]["acc"] == e["teacher_acc"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["extra"]["baseline_acc"] == e["baseline_acc"] and summary["test"] == r.test
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["scheme"] == {"name": "unlabeled", "teacher": "mlp_tiny", "student": "mlp_tiny", "labeled": 0.1,
                             "method": "kd", "alpha": 0.9, "T": 4.0, "labeled_epochs": None, "baseline": True}


def test_yaml_config_with_overrides_and_unknown_scheme_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _register()
    runner = CliRunner()
    cfg = {"data": {"name": "digits"}, "train": {"epochs": 1, "batch_size": 64}, "report": False,
           "scheme": {"name": "unlabeled", "teacher": "mlp_tiny", "student": "mlp_tiny", "labeled_epochs": 1}}
    (tmp_path / "u.yaml").write_text(yaml.safe_dump(cfg))
    r = runner.invoke(app, ["unlabeled", "u.yaml", "scheme.labeled=0.2", "--no-baseline", "--quiet", "--json",
                            "--out", "run"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["extra"]["fraction"] == 0.2 and "baseline_acc" not in res["extra"]
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["scheme"]
    assert saved["labeled"] == 0.2 and saved["baseline"] is False and saved["labeled_epochs"] == 1
    assert not (tmp_path / "run" / "baseline").exists()
    r = runner.invoke(app, ["unlabeled", "u.yaml", "scheme.labelled=0.2", "--out", "bad"])
    assert isinstance(r.exception, ConfigError)
    msg = str(r.exception)
    assert "scheme.labelled" in msg and "scheme.labeled" in msg and "\n" not in msg


def test_bad_labeled_fraction_is_refused_before_training(digits):
    with pytest.raises(ConfigError, match="scheme.labeled"):
        scheme("unlabeled", digits, epochs=1, labeled=0)
