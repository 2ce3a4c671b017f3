"""Optional experiment tracking: TensorBoard event files and MLflow runs.

Enabled from the run config::

    tracking:
      tensorboard: true            # <run>/tensorboard/events.out.tfevents.*  →  tensorboard --logdir runs
      mlflow: sqlite:///mlflow.db  # or a path to an SQLite file  →  mlflow ui --backend-store-uri sqlite:///mlflow.db
      experiment: kdlab

Both libraries are optional (``pip install 'kdlab[track]'``) and imported only when enabled. Every
epoch's record (``train_*`` terms, ``val_*`` metrics, ``lr``) is logged at step = epoch; at the end
the test metrics, and for MLflow the report, config and summary as artifacts.
"""
from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any, Iterable

from kdlab.errors import ConfigError
from kdlab.spec import Spec


class TrackingSpec(Spec):
    """The ``tracking:`` section: optional experiment tracking (``pip install 'kdlab[track]'``)."""

    tensorboard: bool = False  # event files in <run>/tensorboard
    mlflow: str | None = None  # tracking URI (sqlite:///mlflow.db), or a path to an SQLite file
    experiment: str = "kdlab"  # MLflow experiment name


def mlflow_uri(value: str) -> str:
    """A tracking URI as given (``sqlite:///…``, ``file:…``, ``http://…``), or a path → ``sqlite:///abs/path``."""
    if "://" in value or value.startswith("file:"):
        return value
    p = Path(value).expanduser().resolve()
    p.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{p}"


def _flatten(d: Any, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out.update(_flatten(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = str(d)[:500]
    return out


def _scalars(rec: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in rec.items()
            if k not in ("epoch", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)}


class Tracker:
    """Sends a run's params and metrics to the enabled backends; a no-op when none is."""

    def __init__(self, tensorboard_dir: str | Path | None = None, mlflow: str | None = None, experiment: str = "kdlab",
                 run_name: str = "run", params: dict[str, Any] | None = None,
                 tags: dict[str, str] | None = None) -> None:
        self.tb: Any = None  # torch.utils.tensorboard.SummaryWriter, when enabled
        self.client: Any = None  # mlflow.MlflowClient, when enabled
        self.run_id: str | None = None
        self.finished = False
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ModuleNotFoundError:
                raise ConfigError("tracking.tensorboard needs the tensorboard package: "
                                  "pip install 'kdlab[track]'") from None
            self.tb = SummaryWriter(log_dir=str(tensorboard_dir))
            if params:
                self.tb.add_text("config", "\n".join(f"    {k}: {v}" for k, v in _flatten(params).items()), 0)
        if mlflow:
            self._open_mlflow(mlflow_uri(mlflow), experiment, run_name, params or {}, tags or {})

    def _open_mlflow(self, uri: str, experiment: str, run_name: str, params: dict[str, Any],
                     tags: dict[str, str]) -> None:
        import logging

        try:
            from mlflow.entities import Param
            from mlflow.tracking import MlflowClient
        except ModuleNotFoundError:
            raise ConfigError("tracking.mlflow needs the mlflow package: pip install 'kdlab[track]'") from None
        for name in ("alembic", "mlflow"):  # database set-up chatter
            logging.getLogger(name).setLevel(logging.WARNING)
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is not None:
            exp_id = exp.experiment_id
        else:
            location = None
            if uri.startswith("sqlite:///"):  # artifacts beside the database, not in the working directory
                location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
            exp_id = self.client.create_experiment(experiment, artifact_location=location)
        run = self.client.create_run(exp_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        flat = list(_flatten(params).items())
        for i in range(0, len(flat), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in flat[i:i + 100]])

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        vals = _scalars(metrics)
        if self.tb is not None:
            for k, v in vals.items():
                self.tb.add_scalar(_tb_tag(k), v, step)
            self.tb.flush()
        if self.client is not None and vals:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in vals.items()])

    def log_epoch(self, epoch: int, rec: dict[str, Any]) -> None:
        """``fit(on_epoch_end=…)``: epoch is 0-based; the step logged is the 1-based epoch number."""
        self.log_metrics(rec, int(rec.get("epoch", epoch + 1)))

    def finish(self, test: dict[str, Any] | None = None, step: int = 0, extra: dict[str, Any] | None = None,
               artifacts: Iterable[str | Path] = (), status: str = "FINISHED") -> None:
        if self.finished:
            return
        self.finished = True
        final = {**{f"test_{k}": v for k, v in (test or {}).items()}, **(extra or {})}
        try:
            if final:
                self.log_metrics(final, step)
            if self.client is not None:
                for a in artifacts:
                    p = Path(a)
                    if p.is_file():
                        self.client.log_artifact(self.run_id, str(p))
                    elif p.is_dir():
                        self.client.log_artifacts(self.run_id, str(p), artifact_path=p.name)
        finally:
            if self.tb is not None:
                self.tb.close()
            if self.client is not None:
                self.client.set_terminated(self.run_id, status)

    @property
    def enabled(self) -> bool:
        return self.tb is not None or self.client is not None


def _tb_tag(key: str) -> str:
    """``train_kd`` → ``train/kd``, ``val_acc`` → ``val/acc``, ``test_acc`` → ``test/acc``, ``lr`` → ``lr``."""
    for prefix in ("train_", "val_", "test_"):
        if key.startswith(prefix):
            return f"{prefix[:-1]}/{key[len(prefix):]}"
    return key


def open_tracker(spec: TrackingSpec, run_dir: str | Path | None, *, name: str, params: dict[str, Any],
                 tags: dict[str, str]) -> Tracker:
    """The Tracker a ``tracking:`` section asks for (a no-op one when tracking is off). ``params``:
    the resolved config, logged as flattened parameters; ``tags``: e.g. the command and the data."""
    if not (spec.tensorboard or spec.mlflow):
        return Tracker()
    tb_dir = None
    if spec.tensorboard:
        if run_dir is None:
            warnings.warn("tracking.tensorboard is on but the run is not saved: no event files written", stacklevel=2)
        else:
            tb_dir = Path(run_dir) / "tensorboard"
    tags = dict(tags)
    if run_dir is not None:
        name = Path(run_dir).name
        tags["kdlab.run_dir"] = str(Path(run_dir).resolve())
    return Tracker(tb_dir, spec.mlflow, spec.experiment, name, params, tags)


def finish_run(tracker: Tracker, run_dir: str | Path | None, test: dict[str, Any], summary: dict[str, Any]) -> None:
    """End-of-run logging: test metrics and best validation accuracy; the run's files as MLflow artifacts."""
    if not tracker.enabled:
        return
    arts: list[Path] = []
    if run_dir is not None:
        run = Path(run_dir)
        arts = [run / n for n in ("report.html", "config.yaml", "summary.json", "plots")]
    tracker.finish(test, step=int(summary.get("epochs") or 0),
                   extra={"best_val_acc": summary.get("best_val_acc", float("nan"))}, artifacts=arts)
