"""`kdlab self-distill` killed with SIGKILL mid-run and restarted with --resume ends with exactly the
metrics and the summary of an uninterrupted run, for every kind (real processes, CPU, one thread):

* byot: killed after its first epoch (the exits of an epoch saved but not yet observed are recovered);
* born-again: killed inside generation 1 (generation 0 is replayed from its stage, gen1 continued);
* snapshot: killed after the snapshot epoch (the snapshot teacher comes back from state.pt).

A resume with a changed scheme option is refused with one line naming the key.
"""
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tests._resume import ENV
from tests._resume import finish as _finish
from tests._resume import metrics as _metrics
from tests._resume import summary as _summary

COMMON: dict[str, Any] = {"data": {"name": "digits"}, "train": {"batch_size": 16}, "seed": 1, "threads": 1,
                          "report": False}
# kind: (scheme section, epochs, the stage directory watched, epochs saved there before the kill)
KINDS: dict[str, tuple[dict[str, Any], int, str, int]] = {
    "byot": ({"kind": "byot", "model": "cnn_tiny"}, 3, ".", 1),
    "born-again": ({"kind": "born-again", "model": "cnn_tiny", "generations": 2}, 2, "gen1", 1),
    "snapshot": ({"kind": "snapshot", "model": "cnn_tiny", "at_epoch": 1}, 4, ".", 2),
}


def _kdlab(cwd: Path, *args: str) -> "subprocess.Popen[str]":
    return subprocess.Popen([sys.executable, "-m", "kdlab", "self-distill", *args], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _lines(path: Path) -> int:
    try:
        return sum(1 for line in path.read_text().splitlines() if line.strip())
    except OSError:
        return 0


def _saved(run: Path, epochs: int) -> bool:
    """state.pt holds at least ``epochs`` epochs (it is written after metrics.jsonl)."""
    m, s = run / "metrics.jsonl", run / "state.pt"
    try:
        return _lines(m) >= epochs and s.stat().st_mtime_ns >= m.stat().st_mtime_ns
    except OSError:
        return False


@pytest.mark.parametrize("kind", list(KINDS))
def test_sigkill_then_resume_matches_uninterrupted(kind: str, tmp_path: Path) -> None:
    section, epochs, stage, before = KINDS[kind]
    cfg = {**COMMON, "train": {**COMMON["train"], "epochs": epochs}, "scheme": {"name": "self-distill", **section}}
    (tmp_path / "sd.yaml").write_text(yaml.safe_dump(cfg))
    full = _kdlab(tmp_path, "sd.yaml", "--out", "full", "--quiet")  # the reference runs alongside the victim
    victim = _kdlab(tmp_path, "sd.yaml", "--out", "part", "--quiet")
    watched = tmp_path / "part" / stage
    deadline = time.monotonic() + 240
    while not _saved(watched, before):
        assert victim.poll() is None, f"the run ended before it could be killed:\n{victim.communicate()[1]}"
        assert time.monotonic() < deadline, f"no state.pt with {before} epochs in {watched} after 240 s"
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    part = tmp_path / "part"
    assert not (part / "summary.json").exists(), "the victim finished before the kill: nothing was tested"
    assert before <= len(_metrics(watched)) < epochs
    if kind == "snapshot":  # what is tested: the teacher comes back from the trainable's state
        state = torch.load(watched / "state.pt", map_location="cpu", weights_only=True)
        assert state["model"]["_extra_state"]["snapshot"] is not None

    err = _finish(_kdlab(tmp_path, "sd.yaml", "--out", "part", "--quiet", "--resume"))
    assert f"nothing to resume in {Path('part') / stage} " not in err
    _finish(full)

    ref = tmp_path / "full"
    runs = [Path("."), *sorted(p.relative_to(ref) for p in ref.iterdir() if p.is_dir())]
    assert [str(r) for r in runs] == (["."] if kind != "born-again" else [".", "gen0", "gen1"])
    for r in runs:
        assert _metrics(part / r) == _metrics(ref / r), r
        assert _summary(part / r) == _summary(ref / r), r
    assert len(_metrics(part)) == epochs
    assert _summary(part)["extra"]["kind"] == kind

    if kind != "born-again":
        return
    # a resume with a changed scheme option is refused, naming the key (by the first stage, gen0)
    p = subprocess.run([sys.executable, "-m", "kdlab", "self-distill", "sd.yaml", "--out", "part", "--quiet",
                        "--resume", "--alpha", "0.2"], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "scheme.alpha" in p.stderr and "gen0" in p.stderr, p.stderr


def test_unknown_scheme_key_is_one_line_exit_2(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "kdlab", "self-distill", "--kind", "snapshot", "scheme.at_epochs=2",
                        "--data", "digits", "--epochs", "1", "--quiet"], cwd=tmp_path, env=ENV, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "scheme.at_epochs" in p.stderr and "scheme.at_epoch'" in p.stderr
