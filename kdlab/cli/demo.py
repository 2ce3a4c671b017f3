"""The main job: a shipped strong teacher distilled into a student with ≥10× fewer parameters, next to
the same student trained alone with the same budget, and the gain read against the seed spread that
``benchmarks/main_job.py`` measured for exactly these settings (``kdlab/assets/main_job.json``)."""
from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from kdlab.cli.main import app
from kdlab.objective import DEFAULT_METHOD

ASSETS = Path(__file__).resolve().parent.parent / "assets"
TEACHER = ASSETS / "teachers" / "fmnist_resnet56"
BENCHMARK = ASSETS / "main_job.json"  # written by benchmarks/main_job.py


@dataclass(frozen=True)
class Job:
    """What the main job trains: both students get the same data, epochs, schedule and seed."""

    student: str = "resnet8"
    epochs: int = 5
    method: str = DEFAULT_METHOD
    subset: int | None = None  # training images drawn from the 54,000 (None: all)
    augment: bool = True  # random crop + flip for both students; the teacher sees the student's view
    views: int = 4  # distinct augmented views per image whose teacher outputs are cached
    # mixup for the distilled student only ("function matching", Beyer et al. 2022: the teacher labels
    # each mixed image); the student alone trains without it, its better setting at this budget
    mix: str = "none"
    precision: str = "fp32"

    def key(self) -> dict[str, Any]:
        return asdict(self)


def run_job(job: Job, teacher: str, seed: int, out: str, progress: bool = True,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the student alone and distilled (same seed, so the same initial weights and batch order);
    returns both results and the comparison rows (teacher, alone, distilled)."""
    import torch

    from kdlab.api import distill, load_model, train
    from kdlab.data import load_data
    from kdlab.evaluate.compare import compare

    t_model, t_meta = load_model(teacher)
    # the split is fixed (data.split_seed 0, the teacher's); the seed varies weights and batch order
    data = load_data("fashion-mnist", subset=job.subset, augment=job.augment)
    kd_data = data if job.mix == "none" else load_data("fashion-mnist", subset=job.subset, augment=job.augment,
                                                        mix=job.mix)
    opts: dict[str, Any] = {"precision": job.precision}
    log(f"teacher {Path(teacher).name}: {sum(p.numel() for p in t_model.parameters()):,} params; student "
        f"{job.student}; {job.epochs} epochs each on {len(data.train):,} training images"
        + (" (random crop + flip)" if job.augment else ""))
    log("1/2 training the student alone (labels only) …")
    alone = train(job.student, data, epochs=job.epochs, seed=seed, out=f"{out}/alone", progress=progress, **opts)
    log(f"    test top-1 {100 * alone.test['acc']:.2f}%")
    log(f"2/2 distilling the teacher into the student ({job.method}) …")
    # the teacher runs once per (image, view) into a cache; every step then reads its outputs
    cache: dict[str, Any] = {"dir": f"{out}/teacher-cache", "views": job.views if job.augment else 1}
    kd = distill(teacher, job.student, kd_data, method=job.method, epochs=job.epochs, seed=seed,
                 out=f"{out}/distilled", progress=progress, cache=cache, **opts)
    log(f"    test top-1 {100 * kd.test['acc']:.2f}%")
    # the teacher is measured with its own normalisation
    t_test = replace(data.test, mean=torch.tensor(t_meta["mean"]), std=torch.tensor(t_meta["std"]))
    rows = compare({"teacher": t_model, "student alone": alone.student, f"student + {job.method}": kd.student},
                   data, splits={"teacher": t_test})
    return {"alone": alone, "distilled": kd, "rows": rows, "test_images": len(data.test)}


def gain_verdict(gain: float, job: Job, teacher: str, bench: Path = BENCHMARK) -> str:
    """The gain (points) next to the seed spread the benchmark measured for these settings."""
    if not bench.is_file():
        return "no benchmark of the seed spread found (benchmarks/main_job.py measures it)"
    b = json.loads(bench.read_text())
    if b.get("job") != job.key() or Path(b.get("teacher", "")).name != Path(teacher).name:
        return ("the benchmark measured other settings (" + ", ".join(f"{k}={v}" for k, v in b.get("job", {}).items())
                + "); run benchmarks/main_job.py with these to measure the seed spread")
    gains = [100 * (d - a) for a, d in zip(b["alone"], b["distilled"])]
    spread = max(100 * statistics.stdev(b["alone"]), 100 * statistics.stdev(b["distilled"]))
    mean = statistics.mean(gains)
    verdict = ("larger than the seed spread: a real gain" if abs(gain) > spread and gain * mean > 0
               else "within the seed spread: noise")
    return (f"benchmark over seeds {b['seeds']} (benchmarks/main_job.md): gain {mean:+.2f} points (per seed "
            + ", ".join(f"{g:+.2f}" for g in gains) + f"), seed spread (std) {spread:.2f}; this run's "
            f"{gain:+.2f} is {verdict}")


@app.command()
def demo(epochs: int = typer.Option(Job.epochs, help="epochs for each student"),
         student: str = typer.Option(Job.student, help="student model"),
         teacher: Optional[str] = typer.Option(None, help="teacher checkpoint (default: the shipped resnet56)"),
         method: str = typer.Option(Job.method, help="distillation method(s), e.g. dist or kd+at"),
         seed: int = typer.Option(0),
         out: str = typer.Option("runs/demo", help="where the runs and the table go"),
         quiet: bool = typer.Option(False, help="no progress bars")) -> None:
    """The main job: distill the shipped Fashion-MNIST teacher (resnet56, 855,482 parameters) into a
    student with ≥10× fewer parameters, train the same student alone with the same budget, and print
    the comparison and the gain next to the benchmark's seed spread.

    Example:  kdlab demo --epochs 15
    """
    from kdlab.evaluate.compare import print_table, save_table

    t_path = teacher or str(TEACHER)
    if not Path(t_path + ".safetensors").is_file() and not Path(t_path).is_file():
        raise typer.BadParameter(f"teacher {t_path} not found; `make teachers` trains it")
    job = replace(Job(), epochs=epochs, student=student, method=method)
    r = run_job(job, t_path, seed, out, progress=not quiet, log=typer.echo)
    print_table(r["rows"], f"Fashion-MNIST test set ({r['test_images']:,} images)")
    save_table(r["rows"], out)
    alone, kd = r["alone"].test, r["distilled"].test
    gain = 100 * (kd["acc"] - alone["acc"])
    typer.echo(f"distillation {'gained' if gain >= 0 else 'lost'} {abs(gain):.2f} points of top-1 "
               f"({100 * (kd['f1'] - alone['f1']):+.2f} macro-F1) over the same student alone; "
               f"table saved to {out}/compare.md")
    typer.echo(gain_verdict(gain, job, t_path))
