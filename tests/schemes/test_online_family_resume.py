"""Online distillation under the run lifecycle: a real `kdlab mutual` process killed with SIGKILL
after its first epochs and restarted with --resume ends with exactly the metrics, the deployed peer
and the summary of an uninterrupted run (each peer's best weights live in the cohort's state)."""
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
ARGS = ["mutual", "--peers", "mlp_tiny,cnn_tiny", "--data", "digits", "--epochs", str(EPOCHS), "--batch-size", "16",
        "--quiet", "threads=1", "seed=2", "report=false"]


def _start(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kdlab", *ARGS, "--out", str(out), *extra], cwd=out.parent,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    full, part = tmp_path / "full", tmp_path / "part"
    ref = _start(full)
    victim = _start(part)
    deadline = time.monotonic() + 240
    while len(_metrics(part) if (part / "metrics.jsonl").exists() else []) < 2:
        assert victim.poll() is None, f"the run ended before it could be killed:\n{victim.communicate()[1]}"
        assert time.monotonic() < deadline, "no second epoch after 240 s"
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert not (part / "summary.json").exists(), "the victim finished before the kill: nothing was tested"
    err = _finish(_start(part, "--resume"))
    assert "nothing to resume" not in err
    _finish(ref)
    assert _metrics(part) == _metrics(full) and len(_metrics(part)) == EPOCHS
    assert all("val_acc/peer1" in r for r in _metrics(part))  # the hook's metrics are kept for every epoch
    assert _summary(part) == _summary(full)  # test metrics, each peer's best, the deployed peer
    for name in ("best.safetensors", "last.safetensors"):
        assert (part / name).read_bytes() == (full / name).read_bytes(), name

    before = (part / "metrics.jsonl").read_text()
    p = subprocess.run([sys.executable, "-m", "kdlab", *ARGS, "--out", str(part), "--resume", "--T", "3"],
                       cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    assert "scheme.T" in p.stderr and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert (part / "metrics.jsonl").read_text() == before
