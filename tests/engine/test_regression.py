"""Pinned loss values of short seeded runs on digits (one thread), so that a silent change in the
loop, the objective parser, a method, the data split or the initialisation shows up here.

If a change is intended, rerun the two scenarios below, check the new numbers are explained by
it, and update the pins in the same commit (saying why)."""
import pytest
import torch

from kdlab.config import load_config
from kdlab.data import Loader, load_data
from kdlab.engine.distiller import Distiller
from kdlab.engine.loop import make_optimizer, train_step
from kdlab.engine.schedule import Schedule
from kdlab.models.load import model_for_data
from kdlab.objective import parse_objective
from kdlab.schemes.offline import create_methods, run_config
from kdlab.teachers.frozen import FrozenTeacher

# (ce, kd, dist_inter, dist_intra, fitnet, loss) at each of 6 steps of kd+dist+fitnet, cnn_small -> cnn_tiny
STEPS = [
    (0.235977, 0.0216, 1.084265, 1.158858, 43.998901, 46.499603),
    (0.23309, 0.03808, 0.433586, 0.786425, 13.445412, 14.936592),
    (0.223343, 0.055743, 0.253503, 0.428283, 5.617654, 6.578526),
    (0.227821, 0.083169, 0.233394, 0.378042, 5.640838, 6.563264),
    (0.220454, 0.096788, 0.219355, 0.258716, 6.205279, 7.000593),
    (0.218888, 0.103522, 0.174855, 0.256969, 6.497264, 7.251497),
]
# (train_loss, val_acc) per epoch and the test accuracy of a 2-epoch teacher, then a 2-epoch KD student
TEACHER = ([(1.257554, 0.844444), (0.189741, 0.966667)], 0.955556)
STUDENT = ([(2.270579, 0.516667), (0.621995, 0.866667)], 0.861111)


@pytest.fixture()
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_pinned_steps_of_a_combined_objective(one_thread):
    data = load_data("digits")
    torch.manual_seed(0)
    teacher = model_for_data("cnn_small", data)
    t = Distiller(teacher, None, create_methods(parse_objective(["ce"])))
    batches = list(Loader(data.train, 64, shuffle=True, seed=0))[:6]
    t.prepare(batches[0], data.info)
    opt = make_optimizer(list(t.parameters()), Schedule(lr=0.1))
    for b in batches:
        train_step(t, b, opt)
    torch.manual_seed(1)
    s = Distiller(model_for_data("cnn_tiny", data), FrozenTeacher(teacher),
                  create_methods(parse_objective("kd+dist+fitnet")))
    s.prepare(batches[0], data.info)
    opt = make_optimizer([p for p in s.parameters() if p.requires_grad], Schedule(lr=0.05))
    got = []
    for i, b in enumerate(batches):
        logged, _ = train_step(s, b, opt, step=i)
        got.append(tuple(logged[k] for k in ("ce", "kd", "dist_inter", "dist_intra", "fitnet", "loss")))
    assert got == [pytest.approx(row, rel=1e-4, abs=1e-6) for row in STEPS]


def _run(model, teacher=None, methods=({"name": "ce"},)):
    cfg = load_config(base={"data": {"name": "digits"}, "student": {"name": model}, "methods": list(methods),
                            "train": {"epochs": 2, "batch_size": 64}, "report": False,
                            "teacher": {"accelerate": "eager"} if teacher is not None else None})
    r = run_config(cfg, command="distill" if teacher is not None else "train", teacher=teacher, save=False,
                   progress=False)
    return [(h["train_loss"], h["val_acc"]) for h in r.history], r.test["acc"]


def test_pinned_short_runs_through_the_lifecycle(one_thread):
    hist, acc = _run("cnn_small")
    assert hist == [pytest.approx(row, rel=1e-4) for row in TEACHER[0]] and acc == pytest.approx(TEACHER[1], abs=1e-6)
    torch.manual_seed(0)
    teacher = run_config(load_config(base={"data": {"name": "digits"}, "student": {"name": "cnn_small"},
                                           "train": {"epochs": 2, "batch_size": 64}, "report": False}),
                         command="train", save=False, progress=False).student
    hist, acc = _run("cnn_tiny", teacher, parse_objective("kd"))
    assert hist == [pytest.approx(row, rel=1e-4) for row in STUDENT[0]] and acc == pytest.approx(STUDENT[1], abs=1e-6)
