"""TensorBoard event files and MLflow runs, read back with the libraries' own readers."""
import json
import sys

import pytest

from kdlab.api import run
from kdlab.config import load_config
from kdlab.data import load_data
from kdlab.engine.tracking import Tracker, mlflow_uri, open_tracker
from kdlab.errors import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # SQLAlchemy notices from inside MLflow


@pytest.fixture(scope="module")
def mlflow_template(tmp_path_factory):
    """An initialised MLflow database (creating the schema is the slow part), copied per test."""
    mlflow = pytest.importorskip("mlflow")
    db = tmp_path_factory.mktemp("mlflow") / "template.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def mlflow_db(mlflow_template, tmp_path):
    import shutil

    db = tmp_path / "track" / "mlflow.db"
    db.parent.mkdir()
    shutil.copy(mlflow_template, db)
    return db


def _cfg(tmp_path, **tracking):
    return load_config(base={"data": {"name": "digits"}, "student": {"name": "mlp_tiny"},
                             "train": {"epochs": 2, "batch_size": 64}, "out": str(tmp_path / "run"),
                             "tracking": tracking, "report": False})


def test_tensorboard_and_mlflow_log_every_epoch(tmp_path, mlflow_db):
    pytest.importorskip("tensorboard")
    import mlflow
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    db = mlflow_db
    r = run(_cfg(tmp_path, tensorboard=True, mlflow=str(db), experiment="digits"), command="train",
            data=load_data("digits"), progress=False)
    history = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 2

    ea = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    assert {"train/loss", "train/ce", "val/acc", "val/ece", "lr", "test/acc"} <= tags
    val = ea.Scalars("val/acc")
    assert [e.step for e in val] == [1, 2]
    assert [e.value for e in val] == pytest.approx([h["val_acc"] for h in history])
    assert ea.Scalars("test/acc")[0].value == pytest.approx(r.test["acc"])

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("digits")
    assert exp.artifact_location.endswith("mlartifacts")  # beside the database, not in the cwd
    (mrun,) = client.search_runs([exp.experiment_id])
    assert mrun.info.status == "FINISHED" and mrun.info.run_name == "run"
    assert mrun.data.params["student.name"] == "mlp_tiny" and mrun.data.params["train.epochs"] == "2"
    assert mrun.data.tags["kdlab.command"] == "train"
    hist = client.get_metric_history(mrun.info.run_id, "val_acc")
    assert [m.step for m in hist] == [1, 2]
    assert [m.value for m in hist] == pytest.approx([h["val_acc"] for h in history])
    assert mrun.data.metrics["test_acc"] == pytest.approx(r.test["acc"])
    assert {"config.yaml", "summary.json"} <= {a.path for a in client.list_artifacts(mrun.info.run_id)}


def test_mlflow_run_marked_failed(mlflow_db):
    import mlflow

    uri = mlflow_uri(str(mlflow_db))
    assert uri == f"sqlite:///{mlflow_db}"
    t = Tracker(mlflow=uri, run_name="broken", params={"a": {"b": [1, 2]}})
    t.log_metrics({"val_acc": 0.5, "note": "text is skipped", "bad": float("nan")}, step=1)
    t.finish(status="FAILED")
    t.finish()  # idempotent
    client = mlflow.MlflowClient(tracking_uri=uri)
    (r,) = client.search_runs([client.get_experiment_by_name("kdlab").experiment_id])
    assert r.info.status == "FAILED"
    assert r.data.params == {"a.b.0": "1", "a.b.1": "2"}
    assert r.data.metrics == {"val_acc": 0.5}


def test_tracking_off_is_a_no_op_and_missing_libraries_say_what_to_install(tmp_path, monkeypatch):
    kw = {"name": "run", "params": {}, "tags": {}}
    assert not open_tracker(_cfg(tmp_path).tracking, tmp_path, **kw).enabled
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(ConfigError, match=r"pip install 'kdlab\[track\]'"):
        open_tracker(_cfg(tmp_path, mlflow="x.db").tracking, tmp_path, **kw)
    with pytest.raises(ConfigError, match="did you mean 'tracking.tensorboard'"):
        load_config(overrides=["tracking.tensorbord=true"])
