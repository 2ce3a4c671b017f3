"""A real `kdlab distill` process killed with SIGKILL mid-run and restarted with --resume ends with
exactly the metrics and the weights of an uninterrupted run with the same seed (CPU, one thread)."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests._resume import ENV
from tests._resume import finish as _finish
from tests._resume import metrics as _metrics
from tests._resume import summary as _summary
from tests.reliability._helpers import make_teacher

EPOCHS = 6
# dropout draws from the torch RNG every step, so the RNG state must resume exactly too
ARGS = ["distill", "--teacher", "t/best", "--student", "mlp", "--data", "digits", "--epochs", str(EPOCHS),
        "--batch-size", "16", "--quiet", "threads=1", "seed=3", "student.options.hidden=[64]",
        "student.options.dropout=0.1", "report=false"]


def _start(out: str, cwd: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kdlab", *ARGS, "--out", out, *extra], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("resume")
    make_teacher(d / "t")
    return d


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(workdir: Path) -> None:
    full = _start("full", workdir)  # the reference runs alongside the victim
    victim = _start("part", workdir)
    state = workdir / "part" / "state.pt"
    deadline = time.monotonic() + 240
    while not state.exists():  # the first epoch is on disk: the process is now inside epoch 2
        assert victim.poll() is None, f"the run ended before it could be killed:\n{victim.communicate()[1]}"
        assert time.monotonic() < deadline, "no state.pt after 240 s"
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    part = workdir / "part"
    assert not (part / "summary.json").exists(), "the victim finished before the kill: nothing was tested"
    done = len(_metrics(part))
    assert 1 <= done < EPOCHS

    err = _finish(_start("part", workdir, "--resume"))
    assert "nothing to resume" not in err
    _finish(full)

    ref, res = workdir / "full", workdir / "part"
    assert _metrics(res) == _metrics(ref)
    assert len(_metrics(res)) == EPOCHS
    assert _summary(res) == _summary(ref)
    for name in ("last", "best"):  # final weights bit for bit
        assert (res / f"{name}.safetensors").read_bytes() == (ref / f"{name}.safetensors").read_bytes(), name
        assert json.loads((res / f"{name}.json").read_text()) == json.loads((ref / f"{name}.json").read_text())
