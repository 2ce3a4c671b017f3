"""data.teacher_view: what a live teacher sees beside the student's augmented view (the consistent-
teaching ablation of Beyer et al. 2022): the same view, an independent one, or the plain sample."""
import pytest
import torch

from kdlab.core import Batch
from kdlab.data import Loader, load_data
from kdlab.engine.distiller import Distiller
from kdlab.errors import ConfigError
from kdlab.methods import create_method
from kdlab.models import create_model


def _first(data, epoch=0):
    loader = Loader(data.train, 32, shuffle=True, seed=3, augment=data.augment)
    loader.set_epoch(epoch)
    return next(iter(loader)), loader


@pytest.mark.parametrize("mix", ["none", "mixup"])
def test_views_differ_as_named_and_replay_exactly(mix):
    same, _ = _first(load_data("digits", augment=True, mix=mix))
    assert same.teacher_inputs is None and same.for_teacher() is same
    clean_data = load_data("digits", augment=True, mix=mix, teacher_view="clean")
    clean, loader = _first(clean_data)
    assert torch.equal(clean.inputs, same.inputs)  # the student's view does not change
    rows = torch.arange(len(clean_data.train))[loader._order()[:32]]
    assert torch.equal(clean.teacher_inputs, clean_data.train.gather(rows))  # the plain samples
    assert not torch.equal(clean.teacher_inputs, clean.inputs)
    ind, _ = _first(load_data("digits", augment=True, mix=mix, teacher_view="independent"))
    assert torch.equal(ind.inputs, same.inputs)
    differs = (ind.teacher_inputs - ind.inputs).flatten(1).abs().amax(1) > 1e-6
    assert differs.float().mean() > 0.8  # another crop/flip (and partner, λ) for nearly every sample
    again, _ = _first(load_data("digits", augment=True, mix=mix, teacher_view="independent"))
    assert torch.equal(again.teacher_inputs, ind.teacher_inputs)  # a pure function of (seed, sample, view)
    moved = ind.to("cpu").for_teacher()
    assert torch.equal(moved.inputs, ind.teacher_inputs) and moved.teacher_inputs is None


def test_the_teacher_gets_its_view_and_the_student_its_own():
    data = load_data("digits", augment=True, teacher_view="clean")
    batch, _ = _first(data)
    seen = {}

    def teacher(b: Batch):
        seen["x"] = b.inputs
        return create_model("cnn_tiny", 10, 1, 8)(b.inputs)

    student = create_model("cnn_tiny", 10, 1, 8)
    d = Distiller(student, teacher, [create_method("kd")])
    d(batch)
    assert torch.equal(seen["x"], batch.teacher_inputs)


def test_bad_settings_name_the_key():
    with pytest.raises(ConfigError, match="data.teacher_view=clean needs augmentation"):
        load_data("digits", augment=False, teacher_view="clean")
    with pytest.raises(ConfigError, match="same, independent or clean"):
        load_data("digits", augment=True, teacher_view="other")
    from kdlab.teachers.cache_build import CacheSpec, cache_for_run

    with pytest.raises(ConfigError, match="needs a live teacher"):
        cache_for_run(CacheSpec(dir="unused"), load_data("digits", augment=True, teacher_view="independent"), None,
                      batch_size=32)
