from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kdlab.cli.main import app

ASSET = Path(__file__).resolve().parent.parent / "assets" / "fmnist_teacher"


@app.command()
def demo(epochs: int = typer.Option(5, help="epochs for each student"),
         student: str = typer.Option("cnn_tiny", help="student model"),
         teacher: Optional[str] = typer.Option(None, help="teacher checkpoint (default: the shipped one)"),
         method: str = typer.Option("kd", help="distillation method(s), e.g. kd or kd+at"),
         seed: int = typer.Option(0),
         out: str = typer.Option("runs/demo", help="where the three runs and the table go"),
         quiet: bool = typer.Option(False, help="no progress bars")) -> None:
    """The main job: distill the shipped Fashion-MNIST teacher into a student with ≥10× fewer
    parameters, train the same student alone with the same budget, and print the comparison.

    Example:  kdlab demo --epochs 5
    """
    from kdlab.api import distill, load_model, train
    from kdlab.data import load_data
    from kdlab.evaluate.compare import compare, print_table, save_table

    t_path = teacher or str(ASSET)
    if not Path(t_path + ".safetensors").is_file() and not Path(t_path).is_file():
        raise typer.BadParameter(f"teacher {t_path} not found; `make teacher` trains it")
    t_model, t_meta = load_model(t_path)
    data = load_data("fashion-mnist")  # the split is fixed (split_seed 0); --seed seeds the training
    typer.echo(f"teacher {t_path}: {sum(p.numel() for p in t_model.parameters()):,} params; "
               f"student {student}; {epochs} epochs each on {len(data.train):,} training images")
    typer.echo("1/2 training the student alone (labels only) …")
    alone = train(student, data, epochs=epochs, seed=seed, out=f"{out}/alone", progress=not quiet)
    typer.echo(f"    test acc {100 * alone.test['acc']:.2f}%")
    typer.echo(f"2/2 distilling the teacher into the student ({method}) …")
    # the teacher runs once over the training set into a cache; every step then reads its outputs
    kd = distill(t_path, student, data, method=method, epochs=epochs, seed=seed, out=f"{out}/distilled",
                 progress=not quiet, cache=f"{out}/teacher-cache")
    typer.echo(f"    test acc {100 * kd.test['acc']:.2f}%")
    from dataclasses import replace

    import torch

    # its own normalisation
    t_test = replace(data.test, mean=torch.tensor(t_meta["mean"]), std=torch.tensor(t_meta["std"]))
    rows = compare({"teacher": t_model, "student alone": alone.student, f"student + {method}": kd.student}, data,
                   splits={"teacher": t_test})
    print_table(rows, f"Fashion-MNIST test set ({len(data.test):,} images)")
    save_table(rows, out)
    gain = 100 * (kd.test["acc"] - alone.test["acc"])
    typer.echo(f"distillation {'gained' if gain >= 0 else 'lost'} {abs(gain):.2f} points of top-1 "
               f"over the student alone; table saved to {out}/compare.md")
