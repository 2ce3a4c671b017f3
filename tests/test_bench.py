import csv

import pytest

from kdlab.bench import load_bench, run_bench
from kdlab.errors import ConfigError


def test_bench_grid_writes_tables_and_resumes(tmp_path):
    cfg = load_bench("configs/bench/digits_smoke.yaml", ["seeds=[0, 1]", "methods=[kd, at]",
                                                          "student_train.epochs=1", "teacher_train.epochs=1"])
    records = run_bench(cfg, tmp_path, log=lambda *_: None)
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert {(r["method"], r["seed"]) for r in rows} >= {("student alone", "0"), ("kd", "1"), ("at", "0")}
    md = (tmp_path / "results.md").read_text()
    assert "| teacher |" in md and "| student alone |" in md and "| kd |" in md and "±" in md
    # a second call reuses finished runs (no retraining) and gives the same records
    (tmp_path / "notes.md").write_text("Reading it: a note kept across rewrites.\n")
    seen: list[str] = []
    again = run_bench(cfg, tmp_path, log=seen.append)
    assert seen == [] and again == records
    md2 = (tmp_path / "results.md").read_text()
    assert md2.startswith(md) and md2.endswith("\nReading it: a note kept across rewrites.\n")


def test_bench_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_bench(tmp_path / "none.yaml")
    bad = tmp_path / "b.yaml"
    bad.write_text("pairs: []\nmethods: [kd]\n")
    with pytest.raises(ConfigError, match="pairs"):
        load_bench(bad)


def test_parallel_jobs_give_the_same_results_as_one_process(tmp_path):
    """--jobs runs the grid in worker processes; every run is seeded, so the table is identical."""
    cfg = load_bench("configs/bench/digits_smoke.yaml", ["seeds=[0]", "methods=[kd, sp]", "threads=1",
                                                          "student_train.epochs=1", "teacher_train.epochs=1"])
    one = run_bench(cfg, tmp_path / "one", log=lambda *_: None)
    seen: list[str] = []
    two = run_bench(cfg, tmp_path / "two", log=seen.append, jobs=2)
    assert sum("done" in s for s in seen) == 3  # student alone, kd, sp
    key = lambda r: (r["pair"], r["method"], r["seed"])  # noqa: E731
    assert [(key(r), r["acc"], r["f1"]) for r in one] == [(key(r), r["acc"], r["f1"]) for r in two]
    with pytest.raises(ConfigError, match="jobs"):
        run_bench(cfg, tmp_path / "x", jobs=0)


def test_a_supplied_teacher_is_described_by_its_own_training(tmp_path):
    """The table used to say `teacher_train.epochs` even for a teacher_checkpoint trained longer."""
    from kdlab.config import load_config
    from kdlab.schemes.offline import run_config

    run_config(load_config(base={"data": {"name": "digits"}, "student": {"name": "mlp_tiny"}, "report": False,
                                 "train": {"epochs": 3, "batch_size": 64}, "out": str(tmp_path / "t")}),
               command="train", progress=False)
    cfg = load_bench("configs/bench/digits_smoke.yaml", ["seeds=[0]", "methods=[kd]", "student_train.epochs=1",
                                                          "teacher_train.epochs=1", "pairs.0.teacher=mlp_tiny",
                                                          f"pairs.0.teacher_checkpoint={tmp_path / 't' / 'best'}"])
    run_bench(cfg, tmp_path / "b", log=lambda *_: None)
    md = (tmp_path / "b" / "results.md").read_text()
    assert "teacher 3 epochs" in md and "teacher 1 epochs" not in md


def test_tune_search_picks_on_validation_and_entries_override_data(tmp_path):
    import csv

    import yaml

    cfg = load_bench("configs/bench/digits_smoke.yaml", [
        "seeds=[0, 1]", "student_train.epochs=1", "teacher_train.epochs=1", "data.augment=true",
        "methods=[{name: kd, label: kd_tuned, tune: {T: [1.0, 8.0]}}, "
        "{name: kd, label: kd_clean, data: {teacher_view: clean}}]"])
    seen: list[str] = []
    run_bench(cfg, tmp_path, log=seen.append)
    search = list(csv.DictReader(open(tmp_path / "search.csv")))
    assert {r["candidate"] for r in search} == {"T=1.0", "T=8.0"} and {r["seed"] for r in search} == {"0"}
    best = max(search, key=lambda r: float(r["val_acc"]))["candidate"]
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert {r["method"] for r in rows} >= {f"kd_tuned (tuned {best})", "kd_clean"}
    used = yaml.safe_load((tmp_path / "runs" / "cnn_small-cnn_tiny" / "kd_tuned" / "s1" / "config.yaml").read_text())
    assert [m for m in used["methods"] if m["name"] == "kd"][0]["T"] == float(best[2:])
    clean = yaml.safe_load((tmp_path / "runs" / "cnn_small-cnn_tiny" / "kd_clean" / "s0" / "config.yaml").read_text())
    assert clean["data"]["teacher_view"] == "clean"
    md = (tmp_path / "results.md").read_text()
    assert "Weight search" in md and "T=1.0" in md
    seen.clear()
    run_bench(cfg, tmp_path, log=seen.append)  # all finished: nothing runs again
    assert not [line for line in seen if "seed" in line]
    assert not (tmp_path / "runs" / "cnn_small-cnn_tiny" / "kd_tuned" / "s0").exists()  # the search's run is reused


def test_a_gain_inside_the_seed_spread_is_labelled_noise():
    from kdlab.bench import within_noise

    assert within_noise(0.002, [0.90, 0.91, 0.92], [0.90, 0.905, 0.91])
    assert not within_noise(0.02, [0.92, 0.925, 0.93], [0.90, 0.905, 0.91])
