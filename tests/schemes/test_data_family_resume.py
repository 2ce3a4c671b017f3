"""The data-arrangement schemes (unlabeled, lifelong, cross-modal) under the run lifecycle: a real
`kdlab lifelong` process killed with SIGKILL during its last stage and restarted with --resume
replays its finished stages (old/, finetune/) and ends with exactly the metrics and the summary of
an uninterrupted run; a resume with a changed scheme option is refused (CPU, one thread)."""
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests._resume import ENV
from tests._resume import finish as _finish
from tests._resume import metrics as _metrics
from tests._resume import summary as _summary

EPOCHS = 6
ARGS = ["lifelong", "--model", "mlp_tiny", "--old", "0-4", "--old-epochs", "2", "--data", "digits", "--epochs",
        str(EPOCHS), "--batch-size", "16", "--quiet", "threads=1", "seed=1", "report=false"]


def _start(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kdlab", *ARGS, "--out", str(out), *extra], cwd=out.parent,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_in_the_last_stage_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    full, part = tmp_path / "full", tmp_path / "part"
    ref = _start(full)  # the reference runs alongside the victim
    victim = _start(part)
    state = part / "state.pt"  # the LwF student's first epoch is on disk: old/ and finetune/ are done
    deadline = time.monotonic() + 240
    while not state.exists():
        assert victim.poll() is None, f"the run ended before it could be killed:\n{victim.communicate()[1]}"
        assert time.monotonic() < deadline, "no state.pt after 240 s"
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert not (part / "summary.json").exists(), "the victim finished before the kill: nothing was tested"
    assert (part / "old" / "summary.json").exists() and (part / "finetune" / "summary.json").exists()
    assert 1 <= len(_metrics(part)) < EPOCHS

    err = _finish(_start(part, "--resume"))
    assert "nothing to resume" not in err
    _finish(ref)
    for stage in ("old", "finetune"):  # replayed, not retrained
        assert _metrics(part / stage) == _metrics(full / stage), stage
    assert _metrics(part) == _metrics(full) and len(_metrics(part)) == EPOCHS
    assert _summary(part) == _summary(full)  # test metrics and extra (before, lwf, finetune)
    assert (part / "last.safetensors").read_bytes() == (full / "last.safetensors").read_bytes()

    # a changed scheme option: refused in one line naming the key, the run left as it was
    before = (part / "metrics.jsonl").read_text()
    p = subprocess.run([sys.executable, "-m", "kdlab", *ARGS, "--out", str(part), "--resume", "--weight", "2"],
                       cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    assert "scheme.weight" in p.stderr and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert (part / "metrics.jsonl").read_text() == before
