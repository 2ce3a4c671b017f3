from __future__ import annotations

from typing import List, Optional

import typer

from kdlab.cli.main import app


@app.command()
def compare(teacher: str = typer.Option(..., help="teacher checkpoint"),
            student: List[str] = typer.Option(..., help="NAME=CHECKPOINT, repeatable (e.g. alone=runs/a/best)"),
            data: Optional[str] = typer.Option(None, help="dataset (default: the teacher's, with its split)"),
            root: Optional[str] = typer.Option(None, help="dataset directory (default: the recorded one)"),
            out: Optional[str] = typer.Option(None, help="also write compare.md/json here"),
            attack: Optional[str] = typer.Option(None, help="also clean vs adversarial top-1: fgsm | pgd"),
            eps: float = typer.Option(0.1, help="attack radius in [0, 1] pixel units"),
            steps: int = typer.Option(20, help="PGD steps"),
            attack_samples: int = typer.Option(1000, help="test samples attacked (the first N)")) -> None:
    """Table of teacher vs students: top-1, macro P/R/F1, params, MFLOPs, CPU latency at batch 1
    and 256, size on disk, speed-up over the teacher; with --attack, a second table of clean and
    adversarial top-1 of each model under the same attack.

    Examples:

      kdlab compare --teacher runs/t/best --student alone=runs/a/best --student kd=runs/kd/best

      kdlab compare --teacher runs/t/best --student kd=runs/kd/best --attack pgd --eps 0.1
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
    paths = {"teacher": teacher}
    for item in student:
        if "=" not in item:
            raise ConfigError(f"--student {item!r} must be NAME=CHECKPOINT")
        name, path = item.split("=", 1)
        models[name] = load_model(path)
        paths[name] = path
    # each model is evaluated with the normalisation it was trained with
    splits = {name: replace(d.test, mean=torch.tensor(meta["mean"]), std=torch.tensor(meta["std"]))
              for name, (_, meta) in models.items() if "mean" in meta and len(d.input_shape) == 3}
    rows = measure({name: m for name, (m, _) in models.items()}, d, splits=splits)
    print_table(rows, f"{d.name} test set ({len(d.test)} samples)")
    if out:
        save_table(rows, out)
    if attack is not None:
        import json
        from pathlib import Path

        from kdlab.api import attack as run_attack

        # from the checkpoints: each model attacked with its own normalisation
        res = {name: run_attack(path, d, "test", kind=attack, eps=eps, steps=steps, samples=attack_samples)
               for name, path in paths.items()}
        first = next(iter(res.values()))
        typer.echo(f"\n{attack.upper()} (ε = {eps} in [0, 1] pixels, {first['steps']} step(s)), "
                   f"first {first['samples']} test samples")
        typer.echo(f"{'model':<16}{'clean top-1':>12}{'adv top-1':>11}")
        for name, r in res.items():
            typer.echo(f"{name:<16}{100 * r['clean_acc']:>12.2f}{100 * r['adv_acc']:>11.2f}")
        if out:
            Path(out).mkdir(parents=True, exist_ok=True)
            (Path(out) / "compare_attack.json").write_text(json.dumps({"attack": attack, **res}, indent=2))
