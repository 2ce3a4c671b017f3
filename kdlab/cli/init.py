from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kdlab.cli.main import app

TEMPLATE = """\
# kdlab run configuration.
#   kdlab distill {path}                      distill the teacher below into the student
#   kdlab train {path}                        train the student from labels alone (the teacher is ignored)
#   kdlab distill {path} train.epochs=5       any key can be overridden as key.sub=value
# Unknown or mistyped keys are errors naming the nearest valid key.
# What exists: kdlab datasets | kdlab models | kdlab methods

data:
  name: {data}{data_pad}# a registered dataset: {datasets}
  # root: /path/to/files          # where the dataset's files are, when not the default location
  val_fraction: 0.1               # share of the training split held out to pick the best epoch
  # subset: 5000                  # only this many training samples (quick experiments)
  # augment: true                 # random crop + flip; default: the dataset's own choice
  # split_seed: 0                 # seed of the train/val(/test) split and subset (not the run's seed)
  # options: {{}}                   # extra options for the dataset loader

student:
  name: {student}{student_pad}# the model to train (kdlab models)
  options: {{}}                     # constructor options of the model

# The teacher: exactly one source. To train one first:
#   kdlab train --data {data} --model cnn_small --epochs 20 --out {teacher_dir}
{teacher_block}
# The loss: every method's weighted term is summed. ce is cross-entropy on the labels; the
# others are written with their paper defaults (kdlab methods). Feature methods (at, fitnet,
# crd, …) go next to a logit one. `kdlab distill --alpha A --T T` sets the logit methods' weight
# and temperature (CE gets 1 - A).
methods:
{methods_block}
  # - {{name: at, weight: 1000}}

train:
  epochs: {epochs}
  batch_size: 64
  optimizer: sgd                  # sgd | adamw | adam
  lr: 0.05
  momentum: 0.9
  weight_decay: 0.0005
  lr_schedule: cosine             # cosine | step (uses milestones and gamma) | constant
  # milestones: [30, 60]
  # gamma: 0.1
  # grad_clip: 5.0
  # eval_batch_size: 512
  # channels_last: true           # NHWC image models: faster on CPU, less precise BatchNorm sums

seed: 0
out: {out}{out_pad}# run directory: checkpoints, metrics.jsonl, summary.json, report.html
# threads: 2                      # CPU threads for PyTorch

report: true                      # <out>/report.html with plots, at the end of the run
tracking:                         # optional: pip install 'kdlab[track]'
  tensorboard: false              # event files in <out>/tensorboard  ->  tensorboard --logdir runs
  mlflow: null                    # e.g. runs/mlflow.db  ->  mlflow ui --backend-store-uri sqlite:///runs/mlflow.db
  experiment: kdlab               # MLflow experiment name

# Teacher-output cache (kdlab cache build): run the teacher once, reuse its outputs every epoch.
# cache:
#   dir: runs/{data}-teacher-cache
#   views: 8                      # augmented views per sample (needed with augmentation)
#   topk: 10                      # keep only the top-k log-probabilities
#   dtype: float16
#   features: [pooled]            # teacher features to cache too, for feature methods

# Adversarial training / robust distillation (docs/robustness.md): PGD examples against the student.
# adversarial:
#   attack: pgd
#   eps: 0.1                      # L-inf radius in [0, 1] pixel units
#   steps: 10                     # PGD steps per batch (step size 2.5 eps / steps unless step_size)
#   target: labels                # labels (PGD-AT, ARD) | teacher (RSLAD: KL from the teacher's soft labels)

# scheme: {{name: mutual, ...}}    # a scheme's own options: write a scheme config with `kdlab init --scheme NAME`
"""

TEACHER = """\
teacher:
  checkpoint: {checkpoint}{pad}# a kdlab checkpoint (best.safetensors + best.json)
  # factory: mypackage.models:build      # or your own code: a function returning an nn.Module,
  # weights: teacher.safetensors         #   its state dict (safetensors only, never pickles)
  # options: {{num_classes: 10}}           #   and the function's keyword arguments
  # features: {{pooled: avgpool}}          #   submodules whose outputs feature methods may use
  # torchscript: teacher.pt              # or a TorchScript file (it holds a program: only files you trust)
  # onnx: teacher.onnx                   # or a black box in ONNX Runtime (logit methods only)
  # hf: models/my-classifier             # or a local Hugging Face transformers directory
  # mean: [0.5]                          # the normalisation the teacher was trained with, per channel
  # std: [0.25]                          #   on [0, 1] pixels; the student's inputs are converted to it
  # accelerate: auto                     # live teacher on CPU: ONNX Runtime / BN folding if it agrees; or eager
"""


def _pad(value: str, width: int) -> str:
    return " " * max(1, width - len(value))


def expanded_objective(method: str) -> list[dict[str, object]]:
    """The objective of ``method`` (one parser: kdlab.objective) with every hyperparameter written out."""
    from kdlab.methods import hyperparameters
    from kdlab.objective import parse_objective

    out: list[dict[str, object]] = []
    for m in parse_objective(method):
        hp = {k: (list(v) if isinstance(v, tuple) else v) for k, v in hyperparameters(m["name"]).items()}
        out.append({"name": m["name"], **hp, **{k: v for k, v in m.items() if k != "name"}})
    return out


SCHEME_TEMPLATE = """\
# kdlab {scheme} configuration.
#   kdlab {scheme} {path}                      run it
#   kdlab {scheme} {path} scheme.{first}=...   any key can be overridden as key.sub=value
#   kdlab {scheme} {path} --resume             continue it after an interruption
# Unknown or mistyped keys are errors naming the nearest valid key.

data:
  name: {data}{data_pad}# a registered dataset: {datasets}
  val_fraction: 0.1               # share of the training split held out to pick the best epoch
  # subset: 5000                  # only this many training samples (quick experiments)
  # split_seed: 0                 # seed of the train/val(/test) split and subset (not the run's seed)

scheme:                           # the scheme's own options, with their defaults
  name: {scheme}
{scheme_block}

train:
  epochs: {epochs}
  batch_size: 64
  lr: 0.05
  lr_schedule: cosine             # cosine | step | constant

seed: 0
out: {out}{out_pad}# run directory (stages in sub-directories, same layout)
report: true
"""


def _option_comments(cls: type) -> dict[str, str]:
    """``name: type = default  # comment`` lines of an options class → {name: comment}."""
    import inspect
    import re

    out: dict[str, str] = {}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s+(\w+)\s*:[^#]*#\s*(.+)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def render_scheme(scheme: str, path: str, data: str, epochs: int, out: str | None) -> str:
    from kdlab.cli.common import _yaml
    from kdlab.data import list_datasets
    from kdlab.schemes import SCHEMES

    options = SCHEMES.get(scheme).options
    defaults = options().model_dump(mode="json")
    notes = _option_comments(options)
    lines = []
    for k, v in defaults.items():
        entry = f"  {k}: {_yaml(v) if v is not None else 'null'}"
        lines.append(entry + (_pad(entry, 34) + "# " + notes[k] if k in notes else ""))
    out = out or f"runs/{scheme}-{data}"
    return SCHEME_TEMPLATE.format(scheme=scheme, path=path, first=next(iter(defaults), "name"), data=_yaml(data),
                                  data_pad=_pad(_yaml(data), 26), datasets=", ".join(list_datasets()),
                                  scheme_block="\n".join(lines), epochs=epochs, out=_yaml(out),
                                  out_pad=_pad(_yaml(out), 29))


def render(path: str = "kdlab.yaml", data: str = "digits", student: str = "mlp_tiny", teacher: str | None = None,
           method: str = "kd", epochs: int = 20, out: str | None = None, with_teacher: bool = True) -> str:
    from kdlab.cli.common import _yaml
    from kdlab.data import list_datasets

    teacher = teacher or f"runs/{data}-teacher/best"
    out = out or f"runs/{data}-{student}-{method if with_teacher else 'alone'}"
    if with_teacher:
        block = TEACHER.format(checkpoint=_yaml(teacher), pad=_pad(_yaml(teacher), 27))
        methods = [f"  - {_yaml(m)}" for m in expanded_objective(method)]
    else:
        block = "# " + TEACHER.format(checkpoint=_yaml(teacher),
                                      pad=_pad(_yaml(teacher), 27)).rstrip("\n").replace("\n", "\n# ")
        methods = ["  - {name: ce}"]
    teacher_dir = str(Path(teacher).parent)
    return TEMPLATE.format(path=path, data=_yaml(data), data_pad=_pad(_yaml(data), 26),
                           datasets=", ".join(list_datasets()),
                           student=_yaml(student), student_pad=_pad(_yaml(student), 26), teacher_dir=teacher_dir,
                           teacher_block=block, methods_block="\n".join(methods), epochs=epochs, out=_yaml(out),
                           out_pad=_pad(_yaml(out), 29))


@app.command()
def init(path: str = typer.Argument("kdlab.yaml", help="file to write"),
         data: str = typer.Option("digits", help="dataset name (kdlab datasets)"),
         student: str = typer.Option("mlp_tiny", help="student model (kdlab models)"),
         teacher: Optional[str] = typer.Option(None, help="teacher checkpoint (default runs/<data>-teacher/best)"),
         method: str = typer.Option("kd", help="distillation method (kdlab methods)"),
         epochs: int = typer.Option(20, min=1),
         out: Optional[str] = typer.Option(None, help="run directory written into the config"),
         no_teacher: bool = typer.Option(False, "--no-teacher", help="a config for training from labels alone"),
         scheme: Optional[str] = typer.Option(None, help="a starter for a scheme instead (kdlab schemes: mutual, "
                                              "assistant, …)"),
         force: bool = typer.Option(False, "--force", help="overwrite an existing file")) -> None:
    """Write a commented starter config: every section, the teacher sources, tracking and the
    report, with the defaults filled in. It loads as it is; edit, then run it.

    Examples:

      kdlab init                         (writes kdlab.yaml: KD on digits)

      kdlab init cifar.yaml --data cifar10 --student resnet8x4 --teacher runs/r32x4/best --method dkd

      kdlab init teacher.yaml --no-teacher --student cnn_small && kdlab train teacher.yaml

      kdlab init dml.yaml --scheme mutual && kdlab mutual dml.yaml
    """
    import yaml

    from kdlab.config import load_config
    from kdlab.data import DATASETS
    from kdlab.errors import ConfigError
    from kdlab.models import MODELS
    from kdlab.schemes.offline import create_methods

    p = Path(path)
    if p.exists() and not force:
        raise ConfigError(f"{p} exists; use --force to overwrite it")
    from kdlab.data.text import CORPORA

    if not (scheme is not None and data in CORPORA):  # a text corpus (kdlab lm-distill) is no dataset
        DATASETS.get(data)
    MODELS.get(student)  # unknown names fail here, naming the nearest
    if scheme is not None:
        from kdlab.schemes import scheme_options

        text = render_scheme(scheme, str(p), data, epochs, out)
        cfg = load_config(base=yaml.safe_load(text))
        scheme_options(scheme, cfg.scheme)  # what we write must load, scheme options included
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        typer.echo(f"wrote {p}; next: kdlab {scheme} {p}")
        return
    text = render(str(p), data, student, teacher, method, epochs, out, with_teacher=not no_teacher)
    create_methods([m.model_dump() for m in load_config(base=yaml.safe_load(text)).methods])  # it must load
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    typer.echo(f"wrote {p}; next: kdlab {'train' if no_teacher else 'distill'} {p}")
