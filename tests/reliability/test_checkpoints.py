"""Checkpoint integrity: damaged files are detected with a message naming them, an interrupted
write keeps the previous good file, resume rebuilds damaged last/best checkpoints from the training
state, and a non-finite loss stops training with the last good checkpoint intact."""
import json
import logging
import sys

import pytest
import torch

from kdlab.data import load_data
from kdlab.engine.distiller import Distiller
from kdlab.engine.loop import Schedule, fit
from kdlab.errors import CheckpointError, NonFiniteLossError
from kdlab.methods import create_method
from kdlab.models import create_model
from kdlab.store import checkpoint as ckpt


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", split_seed=0)


def _fit(data, out, epochs=3, resume=False, hook=None, extra=()):
    torch.manual_seed(11)
    s = create_model("mlp", 10, 1, 8, hidden=(32,), dropout=0.1)
    return fit(Distiller(s, None, [create_method("ce"), *extra]), data, Schedule(epochs=epochs, batch_size=64), seed=2,
               run_dir=out, resume=resume, progress=False, on_epoch_end=hook)


class Killed(Exception):
    pass


def _kill_after(n):
    def hook(epoch, rec):
        if epoch == n - 1:
            raise Killed

    return hook


def _strip(history):
    return [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in history]


def test_state_bit_flip_is_caught_by_its_checksum(tmp_path):
    path = tmp_path / "state.pt"
    ckpt.save_state(path, {"w": torch.arange(4096, dtype=torch.float32), "epoch": 3})
    assert ckpt.load_state(path)["epoch"] == 3 and "_sha256" not in ckpt.load_state(path)
    raw = bytearray(path.read_bytes())
    i = raw.find(torch.tensor([1234.0]).numpy().tobytes())
    raw[i] ^= 0x01  # the zip container does not notice this; the checksum does
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"state\.pt is corrupt \(checksum mismatch\)"):
        ckpt.load_state(path)


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_damaged_state_names_the_file(tmp_path, damage):
    path = tmp_path / "state.pt"
    ckpt.save_state(path, {"w": torch.randn(256)})
    raw = path.read_bytes()
    path.write_bytes({"truncate": raw[: len(raw) // 2], "empty": b"", "garbage": b"\x00\x01not a state" * 50}[damage])
    with pytest.raises(CheckpointError, match=str(path).replace(".", r"\.")):
        ckpt.load_state(path)


def test_interrupted_write_keeps_the_previous_good_checkpoint(tmp_path, monkeypatch):
    m = create_model("mlp_tiny", 10, 1, 8)
    ckpt.save_weights(tmp_path / "last", m, {"epoch": 1})
    good = (tmp_path / "last.safetensors").read_bytes()

    def dies_half_way(tensors, path, *a, **k):
        with open(path, "wb") as f:
            f.write(b"\x00" * 100)  # a partial file, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_file", dies_half_way)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_weights(tmp_path / "last", m, {"epoch": 2})
    assert (tmp_path / "last.safetensors").read_bytes() == good
    assert ckpt.load_weights(tmp_path / "last")[1]["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "last.safetensors"]  # no temp files left


def test_resume_rebuilds_damaged_last_and_best_from_state(digits, tmp_path, caplog):
    full = _fit(digits, tmp_path / "full")
    with pytest.raises(Killed):
        _fit(digits, tmp_path / "part", hook=_kill_after(2))
    part = tmp_path / "part"
    raw = (part / "last.safetensors").read_bytes()
    (part / "last.safetensors").write_bytes(raw[: len(raw) // 3])  # truncated
    (part / "best.safetensors").unlink()  # lost
    with caplog.at_level(logging.WARNING, logger="kdlab"):
        resumed = _fit(digits, part, resume=True)
    text = caplog.text
    assert "last.safetensors is corrupt or truncated" in text and "rewrote" in text
    assert "best.safetensors not found" in text
    assert _strip(resumed.history) == _strip(full.history)
    for name in ("last", "best"):
        a, b = ckpt.load_weights(part / name)[0], ckpt.load_weights(tmp_path / "full" / name)[0]
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert torch.equal(torch.cat([v.flatten() for v in resumed.best_state.values()]),
                       torch.cat([v.flatten() for v in full.best_state.values()]))


def test_resume_after_the_best_epoch_keeps_best_weights_without_best_file(digits, tmp_path):
    """The best weights live in state.pt too: a resumed run reports the same best weights even when
    best.safetensors was lost after the best epoch."""
    full = _fit(digits, tmp_path / "full", epochs=3)
    with pytest.raises(Killed):
        _fit(digits, tmp_path / "part", epochs=3, hook=_kill_after(3))
    (tmp_path / "part" / "best.safetensors").unlink()
    (tmp_path / "part" / "best.json").unlink()
    resumed = _fit(digits, tmp_path / "part", epochs=3, resume=True)
    assert resumed.best == full.best
    assert all(torch.equal(resumed.best_state[k], full.best_state[k]) for k in full.best_state)


def test_resume_with_corrupt_state_is_a_one_line_cli_error(digits, tmp_path, monkeypatch, capsys):
    from kdlab.cli.main import main

    args = ["kdlab", "train", "--data", "digits", "--model", "mlp_tiny", "--epochs", "2", "--quiet", "--out",
            str(tmp_path / "r"), "report=false", "train.batch_size=128"]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as ok:
        main()
    assert ok.value.code in (0, None)
    state = tmp_path / "r" / "state.pt"
    state.write_bytes(state.read_bytes()[:200])
    monkeypatch.setattr(sys, "argv", [*args, "--resume"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: training state") and str(state) in err and "corrupt or truncated" in err


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(digits, tmp_path):
    class NanFromEpoch2(torch.nn.Module):
        needs = frozenset()

        def __init__(self):
            super().__init__()
            self.epoch = 0

        def prepare(self, *a):
            pass

        def set_progress(self, epoch, epochs):
            self.epoch = epoch

        def forward(self, s, t, b):
            return {"boom": s.logits.sum() * (float("nan") if self.epoch >= 1 else 0.0)}

    with pytest.raises(NonFiniteLossError, match=r"term 'boom'"):
        _fit(digits, tmp_path / "r", epochs=3, extra=[NanFromEpoch2()])
    state, meta = ckpt.load_weights(tmp_path / "r" / "last")
    assert meta["epoch"] == 1 and all(torch.isfinite(v).all() for v in state.values())
    assert [json.loads(l)["epoch"] for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()] == [1]
    assert ckpt.load_state(tmp_path / "r" / "state.pt")["epoch"] == 0
