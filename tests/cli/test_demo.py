"""The main job: the shipped strong teachers, a short run of the demo's job, and its verdict on the gain."""
import json
from dataclasses import replace

import pytest

from kdlab.cli.demo import TEACHER, Job, gain_verdict, run_job


def _fmnist():
    try:
        from kdlab.data.fashion_mnist import find_dir

        find_dir(None)
    except Exception:
        pytest.skip("Fashion-MNIST IDX files not present")


@pytest.mark.parametrize("name, floor", [("fmnist_resnet56", 0.94), ("fmnist_vgg8", 0.93)])
def test_shipped_teachers_reach_their_accuracy_on_the_test_set(name, floor):
    _fmnist()
    import kdlab

    path = TEACHER.parent / name
    if not path.with_suffix(".safetensors").is_file():
        pytest.skip(f"{name} not trained yet (make teachers)")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["data_provenance"]["name"] == "fashion-mnist" and meta["data_provenance"]["subset"] is None
    assert kdlab.evaluate(str(path))["acc"] >= floor  # on the official 10,000 test images


def test_student_has_at_most_a_tenth_of_the_teachers_parameters():
    from kdlab.evaluate.cost import count_params
    from kdlab.models import create_model

    t = count_params(create_model("resnet56", 10, 1, 28))
    assert count_params(create_model(Job.student, 10, 1, 28)) * 10 <= t


def test_a_short_main_job_trains_both_students_from_the_same_start(tmp_path):
    _fmnist()
    if not TEACHER.with_suffix(".safetensors").is_file():
        pytest.skip("the shipped teacher is not trained yet (make teachers)")
    job = replace(Job(), student="cnn_tiny", epochs=3, subset=2000, views=1)
    r = run_job(job, str(TEACHER), seed=0, out=str(tmp_path), progress=False, log=lambda *_: None)
    assert [row.name for row in r["rows"]] == ["teacher", "student alone", f"student + {job.method}"]
    assert r["alone"].test["acc"] > 0.3 and r["distilled"].test["acc"] > 0.3
    assert (tmp_path / "teacher-cache").is_dir()  # the teacher ran once into the cache


def _bench(tmp_path, alone, distilled, job=Job()):
    f = tmp_path / "main_job.json"
    f.write_text(json.dumps({"teacher": TEACHER.name, "job": job.key(), "seeds": [0, 1, 2], "alone": alone,
                             "distilled": distilled}))
    return f


def test_the_verdict_sets_the_gain_against_the_measured_seed_spread(tmp_path):
    real = _bench(tmp_path, [0.900, 0.902, 0.898], [0.920, 0.921, 0.919])
    assert "a real gain" in gain_verdict(2.0, Job(), str(TEACHER), real)
    assert "noise" in gain_verdict(0.1, Job(), str(TEACHER), real)
    noisy = _bench(tmp_path, [0.90, 0.92, 0.88], [0.905, 0.925, 0.885])
    assert "noise" in gain_verdict(0.5, Job(), str(TEACHER), noisy)
    other = gain_verdict(2.0, replace(Job(), epochs=99), str(TEACHER), real)
    assert "other settings" in other and "noise" not in other
    assert "no benchmark" in gain_verdict(2.0, Job(), str(TEACHER), tmp_path / "none.json")
