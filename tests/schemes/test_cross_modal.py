import json

import numpy as np
import pytest
import torch

from kdlab.api import scheme
from kdlab.core import Outputs
from kdlab.data import Loader
from kdlab.errors import CheckpointError, ConfigError, IncompatibleError
from kdlab.schemes.cross_modal import PairedTeacher, view_data, write_teacher_outputs
from kdlab.teachers.from_file import FileTeacher, save_outputs

from .conftest import FAST


def test_views_keep_samples_and_labels(digits):
    low = view_data(digits, "lowres:2")
    assert low.input_shape == (1, 4, 4) and torch.equal(low.train.y, digits.train.y)
    assert view_data(digits, "blur:2").input_shape == (1, 8, 8)
    assert view_data(digits, "edges").input_shape == (1, 8, 8)
    x = low.train.gather(torch.arange(len(low.train)))
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 0.05  # renormalised
    with pytest.raises(ConfigError):
        view_data(digits, "sepia")
    with pytest.raises(ConfigError):
        view_data(digits, "channel:3")


class Echo:
    """Teacher whose logits reveal the inputs it was given."""

    def __call__(self, batch):
        return Outputs(batch.inputs.flatten(1)[:, :10])


def test_paired_teacher_sees_its_own_view_of_the_same_samples(digits):
    full = digits
    low = view_data(digits, "lowres:2")
    t = PairedTeacher(Echo(), full.train)
    b = next(iter(Loader(low.train, 16, shuffle=True, seed=1)))
    assert b.inputs.shape[-1] == 4
    assert torch.equal(t(b).logits, full.train.gather(b.index).flatten(1)[:, :10])


def test_file_teacher_round_trip_and_checks(digits, tmp_path):
    path = save_outputs(Echo(), digits.train, tmp_path / "t")
    assert path.suffix == ".npz"
    ft = FileTeacher(path)
    ft.check(digits.train.y)
    b = next(iter(Loader(digits.train, 16, shuffle=True, seed=2)))
    assert torch.equal(ft(b).logits, digits.train.gather(b.index).flatten(1)[:, :10])
    with pytest.raises(IncompatibleError, match="do not line up|does not line up"):
        ft.check(torch.roll(digits.train.y, 1))
    np.save(tmp_path / "few.npy", np.zeros((3, 10), dtype=np.float32))
    few = FileTeacher(tmp_path / "few.npy")
    with pytest.raises(CheckpointError, match="no outputs for sample id"):
        few(b)
    np.save(tmp_path / "bad.npy", np.full((3, 10), np.nan, dtype=np.float32))
    with pytest.raises(CheckpointError, match="NaN"):
        FileTeacher(tmp_path / "bad.npy")


def test_cross_modal_then_black_box_from_the_saved_outputs(digits, tmp_path):
    out = tmp_path / "cm"
    r = scheme("cross-modal", digits, epochs=2, out=str(out), train=FAST, teacher="cnn_tiny", student="mlp_tiny",
               student_view="lowres:2", baseline=True, save_teacher_outputs=str(tmp_path / "t"))
    assert r.student.kdlab_spec["image_size"] == 4  # the student was built for its own view
    assert 0 < r.extra["teacher_acc"] <= 1 and 0 < r.extra["baseline_acc"] <= 1
    assert r.extra["teacher_outputs"] == str(tmp_path / "t.npz")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # written atomically
    for d in (out, out / "teacher", out / "baseline"):
        assert {"config.yaml", "metrics.jsonl", "best.safetensors", "last.safetensors", "state.pt",
                "summary.json"} <= {p.name for p in d.iterdir()}, d
    teacher = json.loads((out / "teacher" / "summary.json").read_text())
    assert teacher["test"]["acc"] == r.extra["teacher_acc"]
    assert json.loads((out / "summary.json").read_text())["extra"]["views"] == {"teacher": "full",
                                                                                "student": "lowres:2"}
    rb = scheme("cross-modal", digits, epochs=2, train=FAST, teacher=str(tmp_path / "t.npz"), student="mlp_tiny",
                student_view="full", alpha=1.0, baseline=False)
    assert rb.extra["teacher_acc"] is None and rb.test["acc"] > 0.3
    assert "train_ce" not in rb.history[-1] or rb.history[-1]["train_ce"] == 0  # outputs alone


def test_written_outputs_match_save_outputs(digits, tmp_path):
    a = np.load(save_outputs(Echo(), digits.train, tmp_path / "a.npz"))
    p = write_teacher_outputs(Echo(), digits.train, tmp_path / "sub" / "b")
    assert p == tmp_path / "sub" / "b.npz" and sorted(p.parent.iterdir()) == [p]
    b = np.load(p)
    assert sorted(a.files) == sorted(b.files) == ["index", "logits", "targets"]
    assert all(np.array_equal(a[k], b[k]) for k in a.files)
    FileTeacher(p).check(digits.train.y)


def test_cross_modal_refuses_unknown_options_and_views(digits):
    with pytest.raises(ConfigError, match="scheme.student_veiw") as e:
        scheme("cross-modal", digits, student_veiw="edges")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="sepia"):
        scheme("cross-modal", digits, student_view="sepia")


def test_teachers_bound_to_training_ids_are_not_evaluated_on_test(digits, tmp_path):
    from kdlab.schemes._common import teacher_acc
    from kdlab.teachers.ensemble import EnsembleTeacher

    ft = FileTeacher(save_outputs(Echo(), digits.train, tmp_path / "t.npz"))
    assert teacher_acc(ft, digits) is None
    assert teacher_acc(EnsembleTeacher([ft, Echo()]), digits) is None
    assert teacher_acc(PairedTeacher(Echo(), digits.train), digits) is None
    assert teacher_acc(Echo(), digits) is not None
