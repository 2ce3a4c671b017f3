"""Resume of the offline-distillation schemes (assistant, multi-teacher, amalgamate): a real
`kdlab assistant` process killed with SIGKILL mid-run and restarted with --resume ends with exactly
the metrics of an uninterrupted run (finished stages replayed, the interrupted one continued); a
resume with a changed scheme option is refused in one line (CPU, one thread)."""
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdlab.cli.main import _register, app
from tests._resume import ENV
from tests._resume import finish as _finish
from tests._resume import metrics as _metrics
from tests._resume import summary as _summary

EPOCHS = 5
ARGS = ["assistant", "--teacher", "mlp_tiny", "--teacher-epochs", "2", "--assistant", "cnn_tiny", "--student",
        "mlp_tiny", "--direct", "--data", "digits", "--epochs", str(EPOCHS), "--batch-size", "16", "--quiet",
        "threads=1", "seed=3", "report=false"]
STAGES = ("teacher", "assistant0", "direct", ".")


def _start(out: str, cwd: Path, *extra: str) -> "subprocess.Popen[str]":
    return subprocess.Popen([sys.executable, "-m", "kdlab", *ARGS, "--out", out, *extra], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("assistant-resume")
    full = _start("full", d)  # the reference runs alongside the victim
    victim = _start("part", d)
    state = d / "part" / "assistant0" / "state.pt"
    deadline = time.monotonic() + 240
    while not state.exists():  # the teacher stage is done and the assistant's first epoch is on disk
        assert victim.poll() is None, f"the run ended before it could be killed:\n{victim.communicate()[1]}"
        assert time.monotonic() < deadline, "no assistant0/state.pt after 240 s"
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert not (d / "part" / "summary.json").exists(), "the victim finished before the kill: nothing was tested"
    assert (d / "part" / "teacher" / "summary.json").is_file()
    _finish(_start("part", d, "--resume"))
    _finish(full)
    return d


def test_sigkill_mid_scheme_then_resume_matches_uninterrupted(killed_and_resumed: Path) -> None:
    ref, res = killed_and_resumed / "full", killed_and_resumed / "part"
    for stage in STAGES:
        assert _metrics(res / stage) == _metrics(ref / stage), stage
        assert _summary(res / stage) == _summary(ref / stage), stage
    assert len(_metrics(res / "teacher")) == 2 and len(_metrics(res)) == EPOCHS
    assert [c["role"] for c in _summary(res)["extra"]["chain"]] == ["teacher", "assistant0", "student"]
    for name in ("last", "best"):  # the deployed student bit for bit
        assert (res / f"{name}.safetensors").read_bytes() == (ref / f"{name}.safetensors").read_bytes(), name


def test_resume_with_a_changed_scheme_option_is_refused(killed_and_resumed: Path) -> None:
    before = (killed_and_resumed / "part" / "metrics.jsonl").read_text()
    p = subprocess.run([sys.executable, "-m", "kdlab", *ARGS, "--out", "part", "--resume", "--T", "2"],
                       cwd=killed_and_resumed, env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "scheme.T" in lines[0] and "cannot resume" in lines[0], p.stderr
    assert (killed_and_resumed / "part" / "metrics.jsonl").read_text() == before


def test_multi_teacher_random_draws_resume_exactly(tmp_path: Path) -> None:
    """Mode ``random`` draws a teacher per step from a seeded generator: a resumed student run
    continues its draws (state.pt), so it matches a run trained in one go."""
    _register()
    args = ["multi-teacher", "--teachers", "mlp_tiny,mlp_tiny", "--student", "mlp_tiny", "--mode", "random",
            "--teacher-epochs", "1", "--data", "digits", "--batch-size", "64", "--quiet", "train.lr_schedule=constant",
            "report=false"]
    runner = CliRunner()
    for out, epochs, more in (("full", 3, []), ("part", 2, []), ("part", 3, ["--resume"])):
        r = runner.invoke(app, [*args, "--epochs", str(epochs), "--out", str(tmp_path / out), *more])
        assert r.exit_code == 0, r.output
    ref, res = tmp_path / "full", tmp_path / "part"
    assert _metrics(res) == _metrics(ref) and len(_metrics(res)) == 3
    assert _summary(res) == _summary(ref)
