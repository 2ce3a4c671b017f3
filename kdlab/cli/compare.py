from __future__ import annotations

from typing import List, Optional

import typer

from kdlab.cli.main import app


@app.command()
def compare(teacher: str = typer.Option(..., help="teacher checkpoint"),
            student: List[str] = typer.Option(..., help="NAME=CHECKPOINT, repeatable (e.g. alone=runs/a/best)"),
            data: Optional[str] = typer.Option(None, help="dataset (default: the teacher's, with its split)"),
            root: Optional[str] = typer.Option(None, help="dataset directory (default: the recorded one)"),
            out: Optional[str] = typer.Option(None, help="also write compare.md/json here")) -> None:
    """Table of teacher vs students: top-1, macro P/R/F1, params, MFLOPs, CPU latency at batch 1
    and 256, size on disk, speed-up over the teacher.

    Example:  kdlab compare --teacher runs/t/best --student alone=runs/a/best --student kd=runs/kd/best
    """
    from dataclasses import replace

    import torch

    from kdlab.data import data_for_checkpoint
    from kdlab.errors import ConfigError
    from kdlab.evaluate.compare import compare as measure
    from kdlab.evaluate.compare import print_table, save_table
    from kdlab.models.load import load_model

    t_model, t_meta = load_model(teacher)
    d = data_for_checkpoint(t_meta, data, root)
    models = {"teacher": (t_model, t_meta)}
    for item in student:
        if "=" not in item:
            raise ConfigError(f"--student {item!r} must be NAME=CHECKPOINT")
        name, path = item.split("=", 1)
        models[name] = load_model(path)
    # each model is evaluated with the normalisation it was trained with
    splits = {name: replace(d.test, mean=torch.tensor(meta["mean"]), std=torch.tensor(meta["std"]))
              for name, (_, meta) in models.items() if "mean" in meta and len(d.input_shape) == 3}
    rows = measure({name: m for name, (m, _) in models.items()}, d, splits=splits)
    print_table(rows, f"{d.name} test set ({len(d.test)} samples)")
    if out:
        save_table(rows, out)
