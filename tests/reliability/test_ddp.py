"""Data-parallel training on CPU (gloo): two processes with the same global batch match one process.

Tolerance: with per-sample-mean losses (CE, KD) and no dropout or BatchNorm, DDP's averaged gradient
equals the single-process gradient up to float32 summation order, so every logged metric agrees to a
relative 1e-5, the final weights to 1e-5 absolute, and validation accuracy to at most one sample.
"""
import json
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdlab.config import load_config
from kdlab.engine import distributed
from kdlab.errors import ConfigError
from kdlab.store import checkpoint as ckpt
from tests.reliability._helpers import make_teacher

RTOL, ATOL = 1e-5, 1e-5


def _cfg(work: Path, out: str, batch: int = 64):
    return load_config(base={
        "data": {"name": "digits"}, "student": {"name": "mlp", "options": {"hidden": [64]}},
        "teacher": {"checkpoint": str(work / "t" / "best")},
        "methods": [{"name": "ce", "weight": 0.1}, {"name": "kd", "weight": 0.9, "T": 4.0}],
        "train": {"epochs": 3, "batch_size": batch}, "seed": 5, "threads": 1, "report": False,
        "out": str(work / out)})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, work: Path, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    writes: list[str] = []
    real = ckpt.atomic_write

    def spy(path, write):  # every file kdlab writes goes through here
        writes.append(str(path))
        return real(path, write)

    ckpt.atomic_write = spy
    from kdlab.api import run

    try:
        r = run(_cfg(work, out), command="distill", progress=False)
        (work / f"{out}-rank{rank}.json").write_text(json.dumps({"writes": writes, "history": r.history, "test": r.test,
                                                                 "world": torch.distributed.get_world_size()}))
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ddp")
    make_teacher(d / "t")
    return d


@pytest.fixture(scope="module")
def single(work):
    from kdlab.api import run

    torch.set_num_threads(1)
    return run(_cfg(work, "single"), command="distill", progress=False)


def _close(a: dict, b: dict, skip=("epoch_seconds",)) -> None:
    assert set(a) == set(b)
    for k in a:
        if k in skip:
            continue
        if isinstance(a[k], float):
            tol = 1.0 / 180 + 1e-12 if k == "val_acc" else RTOL * max(1.0, abs(b[k]))
            assert abs(a[k] - b[k]) <= tol, (k, a[k], b[k])
        else:
            assert a[k] == b[k], k


def test_two_processes_match_one(work, single):
    port = _free_port()
    ctx = mp.get_context("fork")  # the children inherit the imported modules: no second start-up
    procs = [ctx.Process(target=_rank, args=(r, 2, port, work, "ddp")) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    ranks = [json.loads((work / f"ddp-rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["world"] == 2
    # only rank 0 writes
    assert ranks[1]["writes"] == []
    assert {Path(w).name for w in ranks[0]["writes"]} >= {"config.yaml", "metrics.jsonl", "state.pt",
                                                         "last.safetensors", "best.safetensors", "summary.json"}
    # the same steps as one process with the same global batch, metrics reduced over both ranks
    ddp_hist = [json.loads(l) for l in (work / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in ddp_hist] == [r["step"] for r in single.history]
    for a, b in zip(ddp_hist, single.history):
        _close(a, b)
    for a, b in zip(ranks[1]["history"], single.history):  # rank 1 saw the same reduced metrics
        _close(a, b)
    w_ddp = ckpt.load_weights(work / "ddp" / "last")[0]
    w_one = ckpt.load_weights(work / "single" / "last")[0]
    for k in w_one:
        assert torch.allclose(w_ddp[k], w_one[k], rtol=0, atol=ATOL), k
    _close(ranks[0]["test"], single.test)


def test_global_batch_must_split_evenly(work):
    from kdlab.data import load_data
    from kdlab.engine.distiller import Distiller
    from kdlab.engine.loop import Schedule, fit
    from kdlab.methods import create_method
    from kdlab.models import create_model

    s = create_model("mlp_tiny", 10, 1, 8)
    with pytest.raises(ConfigError, match="batch_size 63 .* divisible by the number of processes, 2"):
        fit(Distiller(s, None, [create_method("ce")]), load_data("digits"), Schedule(epochs=1, batch_size=63),
            rank=0, world_size=2, progress=False)


def test_environment_parsing(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    env = distributed.init()
    assert (env.rank, env.world_size, env.enabled, env.is_main) == (0, 1, False, True)
    assert distributed.env_from({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (1, 4, 1)
    with pytest.raises(ConfigError, match="RANK=4, WORLD_SIZE=2"):
        distributed.env_from({"RANK": "4", "WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="WORLD_SIZE='two'"):
        distributed.env_from({"WORLD_SIZE": "two"})
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ConfigError, match="MASTER_ADDR is not set"):
        distributed.init(backend="gloo")


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="no torchrun")
def test_torchrun_cli(work, single):
    """The real launcher: `torchrun --nproc-per-node 2 -m kdlab distill ...` (rank 0 alone reports)."""
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--nproc-per-node", "2", "--master-port", str(_free_port()),
           "-m", "kdlab", "distill", "--teacher", "t/best", "--student", "mlp", "--data", "digits", "--epochs", "3",
           "--batch-size", "64", "--seed", "5", "--quiet", "--out", "torchrun", "threads=1", "report=false",
           "student.options.hidden=[64]"]
    p = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("test: acc") == 1
    hist = [json.loads(l) for l in (work / "torchrun" / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(hist, single.history, strict=True):
        _close(a, b)
