"""kdlab tune: the typed search space, the trial → methods mapping (pinned), a tiny study on digits
that prunes and writes a config `kdlab distill` runs, the sealed test split, a resume after SIGKILL
and two processes sharing one SQLite study."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import yaml

from kdlab.errors import ConfigError
from kdlab.tune import SealedSplit, SealedSplitRead, TuneSpace, load_tune, trial_objective
from tests._resume import ENV
from tests.reliability._helpers import make_teacher

KDLAB = [sys.executable, "-m", "kdlab"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return make_teacher(tmp_path_factory.mktemp("tune_teacher") / "t", model="mlp_tiny", epochs=2)


def _config(tmp: Path, teacher: Path, **tune: object) -> Path:
    cfg = {"data": {"name": "digits"}, "student": {"name": "mlp_tiny"},
           "teacher": {"checkpoint": str(teacher), "accelerate": "eager"},
           "train": {"epochs": 2, "batch_size": 64}, "threads": 1, "report": False,
           "tune": {"dir": str(tmp / "study"), "trials": 6, "epochs": 3, "startup_trials": 2, "sampler_seed": 0,
                    "heartbeat": 1,
                    "space": {"lr": {"low": 0.001, "high": 0.3, "log": True},
                              "methods": {"kd": {}, "dkd": {"beta": {"low": 1, "high": 8}}}}, **tune}}
    p = tmp / "tune.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


# ---------------------------------------------------------------- the space

@pytest.mark.parametrize("override, needle", [
    ("tune.trails=3", "unknown key 'tune.trails'; did you mean 'tune.trials'?"),
    ("tune.space.methods={kd: {tau: {low: 1, high: 2}}}", "hyperparameter 'tau'"),
    ("tune.space.methods={kdd: {}}", "unknown method 'kdd'"),
    ("tune.space.lr={low: 0.2, high: 0.1}", "low 0.2 must be below high 0.1"),
    ("tune.space.lr={low: 0, high: 0.1, log: true}", "log range needs low > 0"),
    ("tune.space.T={low: 1, hi: 2}", "tune.space.T"),
    ("tune.pruner=hyperband", "tune.pruner"),
    ("tune.space.alhpa=0.5", "did you mean 'tune.space.alpha'?"),
])
def test_space_is_validated(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=None) as e:
        load_tune(None, [override], base={"data": {"name": "digits"}})
    assert needle in str(e.value), str(e.value)
    assert len(str(e.value).splitlines()) == 1


def test_trial_maps_to_the_objective_by_hand() -> None:
    space = TuneSpace.model_validate({"methods": {"kd": {}, "at+kd": {"at.weight": {"low": 1, "high": 2000}}}})
    # kd: alpha goes to KD's weight, CE gets 1 - alpha, T to KD
    key, ms = trial_objective(optuna.trial.FixedTrial({"method": "kd", "alpha": 0.7, "T": 2.0}), space)
    assert key == "kd"
    assert ms == [{"name": "ce", "weight": pytest.approx(0.3)}, {"name": "kd", "weight": 0.7, "T": 2.0}]
    # a sum: AT's own weight is a parameter of that choice only; alpha and T still reach KD
    key, ms = trial_objective(optuna.trial.FixedTrial({"method": "at+kd", "alpha": 0.5, "T": 3.0,
                                                       "at+kd:at.weight": 250.0}), space)
    assert ms == [{"name": "ce", "weight": 0.5}, {"name": "at", "weight": 250.0},
                  {"name": "kd", "weight": 0.5, "T": 3.0}]


def test_relation_method_alone_samples_no_alpha_or_t() -> None:
    space = TuneSpace.model_validate({"methods": {"rkd": {"weight": {"low": 0.1, "high": 10, "log": True}}}})
    trial = optuna.trial.FixedTrial({"rkd:weight": 2.0})
    key, ms = trial_objective(trial, space)
    assert ms == [{"name": "ce", "weight": 1.0}, {"name": "rkd", "weight": 2.0}]
    assert set(trial.params) == {"rkd:weight"}


def test_sealed_split_refuses_every_read() -> None:
    s = SealedSplit("why")
    with pytest.raises(SealedSplitRead):
        _ = s.x
    with pytest.raises(SealedSplitRead):
        len(s)


# ---------------------------------------------------------------- a tiny study

class _Tripwire:
    """Stands in for the test split handed to tune: any read is recorded and fails."""

    reads: list[str] = []

    def __getattr__(self, name: str):
        _Tripwire.reads.append(name)
        raise AssertionError(f"the test split was read (.{name})")

    def __len__(self) -> int:
        _Tripwire.reads.append("len")
        raise AssertionError("the test split was read (len)")


def test_tiny_study_prunes_never_reads_test_and_writes_a_runnable_config(tmp_path, teacher, monkeypatch):
    import kdlab.tune as tune_mod
    from kdlab.data import load_data

    cfg, spec = load_tune(_config(tmp_path, teacher, trials=6))
    data = replace(load_data("digits"), test=_Tripwire())
    fits: list[object] = []
    real_fit = tune_mod.fit

    def spy(trainable, d, *a, **k):  # every trial trains on data whose test split is sealed
        fits.append(d.test)
        return real_fit(trainable, d, *a, **k)

    monkeypatch.setattr(tune_mod, "fit", spy)
    lines: list[str] = []
    r = tune_mod.tune(cfg, spec, data=data, say=lines.append)
    assert _Tripwire.reads == []
    assert fits and all(isinstance(t, SealedSplit) for t in fits)
    states = [t.state.name for t in r.study.trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 6
    assert "PRUNED" in states, states  # lr down to 1e-3 falls behind the median after an epoch
    pruned = [t for t in r.study.trials if t.state.name == "PRUNED"]
    assert all(len(t.intermediate_values) < 3 for t in pruned)
    assert all(t.user_attrs["teacher"] == "cache" for t in r.study.trials)  # logit methods: the shared cache
    assert (r.dir / "cache" / "manifest.json").is_file() or any((r.dir / "cache").iterdir())
    report = (r.dir / "report.md").read_text()
    assert "Optimisation history" in report and "importance" in report.lower()
    assert (r.dir / "history.png").is_file()
    assert r.command == f"kdlab distill {r.dir / 'best.yaml'}" and any(r.command in line for line in lines)
    best = yaml.safe_load((r.dir / "best.yaml").read_text())
    assert best["train"]["lr"] == pytest.approx(r.study.best_trial.params["lr"])
    assert best["train"]["epochs"] == 2  # the final run's epochs, not the trials'
    assert best["methods"][1]["name"] == r.study.best_trial.params["method"]
    # the written config runs as is
    from typer.testing import CliRunner

    from kdlab.cli.main import _register, app

    _register()
    p = CliRunner().invoke(app, ["distill", str(r.dir / "best.yaml"), "--quiet", "--out", str(tmp_path / "final")])
    assert p.exit_code == 0, p.output
    summary = json.loads((tmp_path / "final" / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["test"]["acc"] > 0.1


def test_diverging_trials_fail_alone(tmp_path, teacher):
    import kdlab.tune as tune_mod

    cfg, spec = load_tune(_config(tmp_path, teacher, trials=2, epochs=1),
                          ["tune.space.lr={low: 10000, high: 100000, log: true}", "tune.space.methods={kd: {}}"])
    lines: list[str] = []
    r = tune_mod.tune(cfg, spec, say=lines.append)
    assert [t.state.name for t in r.study.trials] == ["FAIL", "FAIL"]  # the study went on after the first
    assert r.best_config is None and r.command is None


def test_a_study_started_with_another_config_is_refused(tmp_path, teacher):
    import kdlab.tune as tune_mod

    cfg, spec = load_tune(_config(tmp_path, teacher, trials=1, epochs=1))
    tune_mod.tune(cfg, spec, say=lambda _m: None)
    cfg2, spec2 = load_tune(_config(tmp_path, teacher, trials=1, epochs=2))
    with pytest.raises(ConfigError, match="started with another config"):
        tune_mod.tune(cfg2, spec2, say=lambda _m: None)


# ---------------------------------------------------------------- processes

def _study(tmp: Path) -> optuna.Study:
    return optuna.load_study(study_name="kdlab-tune", storage=f"sqlite:///{tmp / 'study' / 'study.db'}")


def _finished(tmp: Path) -> int:
    try:
        return sum(t.state.name in ("COMPLETE", "PRUNED") for t in _study(tmp).get_trials(deepcopy=False))
    except Exception:  # not created yet
        return 0


def _running(tmp: Path) -> bool:
    try:
        return any(t.state.name == "RUNNING" for t in _study(tmp).get_trials(deepcopy=False))
    except Exception:  # not created yet
        return False


def test_resume_after_sigkill(tmp_path, teacher):
    import kdlab.tune as tune_mod

    cfg = _config(tmp_path, teacher, trials=5, pruner="none", epochs=2)
    p = subprocess.Popen([*KDLAB, "tune", str(cfg)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    deadline = time.time() + 120
    while _finished(tmp_path) < 2 and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.communicate()
    before = {t.number: t.params for t in _study(tmp_path).trials if t.state.name == "COMPLETE"}
    assert 2 <= len(before) < 5
    time.sleep(2.5)  # two heartbeats: the killed trial is now stale
    lines: list[str] = []
    tune_mod.tune(*load_tune(cfg), say=lines.append)  # the same command again (here in-process)
    assert f"{len(before)} of 5 trials finished" in " ".join(lines)
    study = _study(tmp_path)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 5 and "RUNNING" not in states
    assert {n: study.trials[n].params for n in before} == before  # the trials before the kill are kept
    assert (tmp_path / "study" / "best.yaml").is_file()


def test_two_processes_share_one_sqlite_study(tmp_path, teacher):
    import kdlab.tune as tune_mod

    cfg = _config(tmp_path, teacher, trials=8, pruner="none", epochs=3)
    p = subprocess.Popen([*KDLAB, "tune", str(cfg)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    deadline = time.time() + 120
    while not _running(tmp_path) and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)  # the other process has joined the study and runs its first trial
    tune_mod.tune(*load_tune(cfg), say=lambda _m: None)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    trials = _study(tmp_path).trials
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(done) >= 8
    assert len({t.user_attrs["pid"] for t in done}) == 2  # both processes ran trials of the one study
    assert len({t.number for t in trials}) == len(trials)
