import json

import pytest
import torch

from kdlab.core import Batch
from kdlab.data import load_data
from kdlab.engine.distiller import Distiller
from kdlab.engine.loop import Schedule, fit
from kdlab.errors import CheckpointError, IncompatibleError, NonFiniteLossError
from kdlab.methods import create_method
from kdlab.models import create_model
from kdlab.store import checkpoint as ckpt
from kdlab.teachers import FrozenTeacher


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", split_seed=0)


def _teacher(data):
    torch.manual_seed(0)
    t = create_model("cnn_small", 10, 1, 8)
    fit(Distiller(t, None, [create_method("ce")]), data, Schedule(epochs=2, batch_size=64), progress=False)
    return t


def test_distill_trains_student_and_keeps_teacher_bit_identical(digits, tmp_path):
    t = _teacher(digits)
    before = {k: v.clone() for k, v in t.state_dict().items()}
    s = create_model("mlp_tiny", 10, 1, 8)
    s0 = {k: v.clone() for k, v in s.state_dict().items()}
    d = Distiller(s, FrozenTeacher(t), [create_method("ce", weight=0.1), create_method("kd")])
    assert all(not n.startswith("_teacher") for n, _ in d.named_parameters())  # teacher not trainable
    r = fit(d, digits, Schedule(epochs=3, batch_size=64), run_dir=tmp_path / "run", progress=False)
    assert all(torch.equal(v, before[k]) for k, v in t.state_dict().items())
    assert any(not torch.equal(v, s0[k]) for k, v in s.state_dict().items())
    assert r.best["val_acc"] > 0.5
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert {"train_ce", "train_kd", "train_loss", "val_acc", "val_f1", "lr"} <= set(rows[0])
    for name in ("best", "last"):
        assert (tmp_path / "run" / f"{name}.safetensors").is_file()
        assert ckpt.load_meta(tmp_path / "run" / name)["sha256"]


def test_seeded_runs_are_identical(digits):
    res = []
    for _ in range(2):
        torch.manual_seed(123)
        s = create_model("mlp_tiny", 10, 1, 8)
        res.append(fit(Distiller(s, None, [create_method("ce")]), digits, Schedule(epochs=2, batch_size=64), seed=5,
                       progress=False).history)
    strip = lambda h: [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in h]
    assert strip(res[0]) == strip(res[1])


def test_resume_matches_uninterrupted(digits, tmp_path):
    class Killed(Exception):
        pass

    def kill_after_2(epoch, rec):
        if epoch == 1:
            raise Killed

    def run(out, resume=False, hook=None):
        torch.manual_seed(7)
        s = create_model("mlp", 10, 1, 8, hidden=(32,), dropout=0.2)  # dropout: the RNG state must resume too
        return fit(Distiller(s, None, [create_method("ce")]), digits, Schedule(epochs=4, batch_size=64), seed=1,
                   run_dir=out, resume=resume, progress=False, on_epoch_end=hook)

    full = run(tmp_path / "full")
    with pytest.raises(Killed):
        run(tmp_path / "part", hook=kill_after_2)
    resumed = run(tmp_path / "part", resume=True)
    strip = lambda h: [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in h]
    assert strip(resumed.history) == strip(full.history)


def test_nonfinite_loss_names_term(digits):
    class Bad(torch.nn.Module):
        needs = frozenset()

        def prepare(self, *a):
            pass

        def set_progress(self, *a):
            pass

        def forward(self, s, t, b):
            return {"boom": s.logits.sum() * float("nan")}

    s = create_model("mlp_tiny", 10, 1, 8)
    with pytest.raises(NonFiniteLossError, match="step 0: term 'boom'"):
        fit(Distiller(s, None, [create_method("ce"), Bad()]), digits, Schedule(epochs=1, batch_size=64), progress=False)


def test_class_mismatch_refused_before_training(digits):
    t = create_model("cnn_small", 5, 1, 8)
    s = create_model("mlp_tiny", 10, 1, 8)
    with pytest.raises(IncompatibleError, match="5 classes"):
        fit(Distiller(s, FrozenTeacher(t), [create_method("kd")]), digits, Schedule(epochs=1), progress=False)


def test_corrupt_checkpoint_detected(tmp_path):
    m = create_model("mlp_tiny", 10, 1, 8)
    ckpt.save_weights(tmp_path / "w", m, {"x": 1})
    state, meta = ckpt.load_weights(tmp_path / "w")
    assert meta["x"] == 1 and set(state) == set(m.state_dict())
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "w.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        ckpt.load_weights(tmp_path / "w")


def test_training_state_refuses_pickled_code(tmp_path):
    import pickle

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "state.pt").write_bytes(pickle.dumps({"x": Payload()}))
    with pytest.raises(CheckpointError, match="refusing"):
        ckpt.load_state(tmp_path / "state.pt")
    assert not marker.exists()


def test_batch_to_and_len():
    b = Batch({"input_ids": torch.zeros(3, 5, dtype=torch.long)}, torch.zeros(3, dtype=torch.long))
    assert len(b) == 3 and b.to("cpu").inputs["input_ids"].shape == (3, 5)


def test_channels_last_trains_the_same_model_and_hands_back_contiguous_weights(digits, tmp_path):
    """train.channels_last only changes the memory layout: close weights after a few steps (the
    NHWC BatchNorm sums differ in rounding, and differences grow as training goes on), standard
    (contiguous) weights afterwards, and checkpoints that load as usual."""
    runs = {}
    for cl in (False, True):
        torch.manual_seed(0)
        s = create_model("resnet8", 10, 1, 8)
        fit(Distiller(s, None, [create_method("ce")]), digits, Schedule(epochs=1, batch_size=512, channels_last=cl),
            run_dir=tmp_path / str(cl), progress=False)
        runs[cl] = s
    a, b = runs[False], runs[True]
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert vb.is_contiguous(), k
        torch.testing.assert_close(va, vb, rtol=1e-2, atol=1e-3)
    state, _ = ckpt.load_weights(tmp_path / "True" / "best")
    assert all(v.is_contiguous() for v in state.values())
    # while training, the convolution weights are NHWC
    seen: list[bool] = []

    class Spy(torch.nn.Module):
        def forward(self, s, t, batch):
            seen.append(conv.weight.is_contiguous(memory_format=torch.channels_last))
            return {}

    m = create_model("cnn_tiny", 10, 1, 8)
    conv = next(x for x in m.modules() if isinstance(x, torch.nn.Conv2d) and x.weight.shape[-1] > 1)
    spy = Spy()
    spy.needs = frozenset()
    spy.prepare = lambda *a: None
    spy.set_progress = lambda *a: None
    fit(Distiller(m, None, [create_method("ce"), spy]), digits, Schedule(epochs=1, batch_size=256, channels_last=True),
        progress=False)
    assert seen and all(seen) and conv.weight.is_contiguous()


def test_bf16_precision_runs_the_forwards_in_bf16_and_the_losses_in_float32(digits):
    from kdlab.engine.loop import train_step

    t = _teacher(digits)
    s = create_model("cnn_tiny", 10, 1, 8)
    seen = {}

    class Probe(torch.nn.Module):  # records the dtypes the method is handed
        needs = True

        def forward(self, st, te, batch):
            seen["dtypes"] = (st.logits.dtype, te.logits.dtype)
            return {"kd": create_method("kd")(st, te, batch)["kd"]}

    d = Distiller(s, FrozenTeacher(t), [create_method("ce"), Probe()])
    batch = Batch(digits.train.gather(torch.arange(64)), digits.train.y[:64])
    opt = torch.optim.SGD(s.parameters(), lr=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        raw = s(batch.inputs)
    assert (raw.logits if hasattr(raw, "logits") else raw).dtype == torch.bfloat16  # autocast reaches the model
    logged, logits = train_step(d, batch, opt, autocast=True)
    assert seen["dtypes"] == (torch.float32, torch.float32) and logits.dtype == torch.float32
    assert all(torch.isfinite(torch.tensor(v)) for v in logged.values())
    r = fit(Distiller(create_model("cnn_tiny", 10, 1, 8), None, [create_method("ce")]), digits,
            Schedule(epochs=3, batch_size=64, precision="bf16"), progress=False)
    assert r.best["val_acc"] > 0.5  # it learns


def test_unknown_precision_is_refused():
    with pytest.raises(Exception, match="fp32"):
        Schedule(precision="fp16")
