"""Loading never runs code from a file. Every file kdlab reads on the CLI paths below is handed a
real pickle payload (it creates a file when unpickled); each is refused with a one-line error and
the payload never runs."""
import hashlib
import json
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kdlab.cli.main import main
from tests.reliability._helpers import make_teacher


class Payload:
    """Unpickling this calls ``open(path, "w")``: the marker file appears if any loader runs it."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("evil")
    make_teacher(d / "t")
    return d


@pytest.fixture
def marker(work):
    m = work / "PWNED"
    m.unlink(missing_ok=True)
    yield m
    assert not m.exists(), "the pickle payload ran"


def _cli(work: Path, monkeypatch, capsys, *args: str) -> str:
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "argv", ["kdlab", *args])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2, err
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err


def test_the_payload_is_real(tmp_path):
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Payload(control))).close()
    assert control.exists()


@pytest.mark.parametrize("with_meta", [True, False])
def test_distill_teacher_that_is_a_pickle(work, marker, monkeypatch, capsys, with_meta):
    """`kdlab distill --teacher evil` where evil.safetensors is a pickle (with a metadata file whose
    checksum matches it, so the weights file itself is reached)."""
    evil = work / "evil.safetensors"
    evil.write_bytes(pickle.dumps(Payload(marker), protocol=2))
    meta = work / "evil.json"
    meta.unlink(missing_ok=True)
    if with_meta:
        m = json.loads((work / "t" / "best.json").read_text())
        m["sha256"] = hashlib.sha256(evil.read_bytes()).hexdigest()
        meta.write_text(json.dumps(m))
    err = _cli(work, monkeypatch, capsys, "distill", "--teacher", "evil", "--student", "mlp_tiny", "--data", "digits",
               "--epochs", "1", "--quiet", "report=false")
    assert ("cannot read evil.safetensors" in err) if with_meta else ("evil.json not found" in err)


def test_teacher_weights_that_are_a_torch_pickle(work, marker, monkeypatch, capsys):
    torch.save({"fc.weight": Payload(marker)}, work / "evil_weights.safetensors")
    err = _cli(work, monkeypatch, capsys, "distill", "--student", "mlp_tiny", "--data", "digits", "--epochs", "1",
               "--quiet", "report=false", "teacher.model.name=mlp_tiny", "teacher.weights=evil_weights.safetensors")
    assert "teacher.weights evil_weights.safetensors cannot be loaded" in err


def test_eval_of_a_pickle(work, marker, monkeypatch, capsys):
    (work / "evil_eval.safetensors").write_bytes(pickle.dumps(Payload(marker)))
    shutil.copy(work / "t" / "best.json", work / "evil_eval.json")
    err = _cli(work, monkeypatch, capsys, "eval", "evil_eval")
    assert "evil_eval.safetensors" in err


@pytest.mark.parametrize("fmt", ["torch-zip", "raw-pickle"])
def test_resume_from_a_malicious_state(work, marker, monkeypatch, capsys, fmt):
    run = work / f"run_{fmt}"
    run.mkdir(exist_ok=True)
    state = {"model": Payload(marker), "epoch": 0}
    if fmt == "torch-zip":  # what a tampered torch.save file looks like
        torch.save(state, run / "state.pt")
    else:
        (run / "state.pt").write_bytes(pickle.dumps(state, protocol=2))
    err = _cli(work, monkeypatch, capsys, "train", "--data", "digits", "--model", "mlp_tiny", "--epochs", "2",
               "--quiet", "report=false", "--out", str(run), "--resume")
    assert f"refusing to load {run / 'state.pt'}" in err


def test_cache_array_that_is_a_pickle(work, marker, monkeypatch, capsys):
    """A teacher cache whose logits file was replaced by a pickled object array (manifest checksums
    updated to match, so only the format check stands between the file and the unpickler)."""
    args = ["distill", "--teacher", "t/best", "--student", "mlp_tiny", "--data", "digits", "--epochs", "1",
            "--quiet", "report=false", "cache=cache", "--out", "cached"]
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "argv", ["kdlab", *args])
    with pytest.raises(SystemExit) as ok:
        main()  # builds the cache
    assert ok.value.code in (0, None)
    capsys.readouterr()
    manifest_path = work / "cache" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    name, spec = next(iter(manifest["arrays"].items()))
    f = work / "cache" / spec["file"]
    np.save(f, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    spec["bytes"] = f.stat().st_size
    spec["sha256"] = hashlib.sha256(f.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    err = _cli(work, monkeypatch, capsys, *args)
    assert "cache" in err and "corrupt" in err and "header" in err, err
