"""Every command runs under the real launcher: `torchrun --nproc-per-node 2 -m kdlab <command> ...`
(gloo on CPU) finishes, rank 0 alone reports, and the run directory has the common layout
(stages included). One epoch on digits each: a smoke test, not a numerical comparison (see
test_ddp.py for the exact one)."""
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability._helpers import make_teacher

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent))
LAYOUT = {"config.yaml", "metrics.jsonl", "best.safetensors", "last.safetensors", "state.pt", "summary.json"}
COMMON = ["--data", "digits", "--epochs", "1", "--batch-size", "64", "--quiet", "threads=1", "report=false"]
COMMANDS = {
    "train": (["train", "--model", "mlp_tiny"], []),
    "distill": (["distill", "--teacher", "t/best", "--student", "mlp_tiny", "--method", "kd"], []),
    "mutual": (["mutual", "--peers", "mlp_tiny,mlp_tiny"], []),
    "self-distill": (["self-distill", "--kind", "born-again", "--model", "mlp_tiny", "--generations", "1"], None),
    "assistant": (["assistant", "--teacher", "t/best", "--assistant", "mlp_tiny", "--student", "mlp_tiny",
                   "--no-direct"], ["assistant0"]),
    "multi-teacher": (["multi-teacher", "--teachers", "t/best,t/best", "--student", "mlp_tiny"], []),
    "amalgamate": (["amalgamate", "--teachers", "mlp_tiny,mlp_tiny", "--student", "mlp_tiny", "--no-baseline"],
                   ["teacher0", "teacher1"]),
    "unlabeled": (["unlabeled", "--teacher", "t/best", "--student", "mlp_tiny", "--labeled", "0.3",
                   "--no-baseline"], []),
    "lifelong": (["lifelong", "--model", "mlp_tiny", "--no-baseline"], ["old"]),
    "data-free": (["data-free", "--teacher", "t/best", "--student", "mlp_tiny", "--synth", "dafl", "--steps", "3"], []),
    "cross-modal": (["cross-modal", "--teacher", "mlp_tiny", "--student", "mlp_tiny", "--no-baseline"], ["teacher"]),
    "quantize": (["quantize", "--student", "cnn_tiny", "--qat-epochs", "1", "--no-export"], ["fp32"]),
}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("torchrun")
    make_teacher(d / "t")
    return d


@pytest.mark.skipif(TORCHRUN is None, reason="no torchrun")
@pytest.mark.parametrize("name", list(COMMANDS))
def test_command_under_torchrun(work: Path, name: str) -> None:
    args, stages = COMMANDS[name]
    out = f"tr-{name}"
    cmd = [str(TORCHRUN), "--nproc-per-node", "2", "--master-port", str(_port()), "-m", "kdlab", *args, *COMMON,
           "--out", out]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KDLAB_DIST_BACKEND": "gloo"}
    p = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    assert p.stdout.count("run directory:") == 1, p.stdout  # rank 0 alone reports
    run = work / out
    assert LAYOUT <= {f.name for f in run.iterdir()}, sorted(f.name for f in run.iterdir())
    for stage in stages or [d.name for d in run.iterdir() if d.is_dir() and (d / "config.yaml").is_file()]:
        assert LAYOUT <= {f.name for f in (run / stage).iterdir()}, stage
    # the deployed student rebuilds from its checkpoint alone, finds its data (and view) and scores
    # what the run reported (a peer, an expanded LwF model, a student on a low-resolution view)
    import json

    from kdlab.api import evaluate

    summary = json.loads((run / "summary.json").read_text())
    assert evaluate(run / "best")["acc"] == pytest.approx(summary["test"]["acc"], abs=1e-6)


@pytest.mark.skipif(TORCHRUN is None, reason="no torchrun")
def test_lm_distill_under_torchrun(tmp_path: Path) -> None:
    """The language-model scheme (teacher, baseline, on-policy JSD student) on a tiny text corpus."""
    words = ["the", "market", "rose", "as", "shares", "in", "tech", "firms", "fell", "today"]
    docs = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(30)) + "." for i in range(16)]
    (tmp_path / "c.txt").write_text("\n\n".join(docs))
    cmd = [str(TORCHRUN), "--nproc-per-node", "2", "--master-port", str(_port()), "-m", "kdlab", "lm-distill",
           "--data", "text", "--root", "c.txt", "--seq-len", "16", "--epochs", "1", "--batch-size", "8", "--quiet",
           "--loss", "jsd", "--lmbda", "0.5", "threads=1", "scheme.teacher_options={layers: 1, width: 16, heads: 2}",
           "scheme.student_options={layers: 1, width: 16, heads: 2}", "scheme.samples=0", "--out", "lm"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KDLAB_DIST_BACKEND": "gloo"}
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    assert p.stdout.count("run directory:") == 1, p.stdout  # rank 0 alone reports
    for stage in ("", "teacher", "baseline"):
        assert LAYOUT <= {f.name for f in (tmp_path / "lm" / stage).iterdir()}, stage
