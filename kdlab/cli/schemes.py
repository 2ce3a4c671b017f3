"""Distillation schemes on the command line: mutual, self-distill, assistant, multi-teacher,
amalgamate, unlabeled, lifelong, cross-modal. Each is a thin layer over kdlab.schemes."""
from __future__ import annotations

import json
from typing import Any, List, Optional

import typer

from kdlab.cli.main import app
from kdlab.errors import ConfigError

DATA = typer.Option("digits", help="dataset name (kdlab datasets)")
SUBSET = typer.Option(None, help="keep this many training (and at most this many test) samples")
EPOCHS = typer.Option(10, help="epochs of the scheme's main training")
SEED = typer.Option(0)
LR = typer.Option(None, help="learning rate (default 0.05, SGD)")
BS = typer.Option(None, help="batch size (default 128)")
OUT = typer.Option(None, help="directory for the runs' checkpoints and metrics (default: not saved)")
QUIET = typer.Option(False, help="no progress bars")
JSON = typer.Option(False, "--json", help="print the full result as JSON")


def _data(name: str, subset: Optional[int], seed: int):
    from kdlab.data import load_data

    return load_data(name, seed=seed, subset=subset)


def _opts(lr: Optional[float], batch_size: Optional[int]) -> dict[str, Any]:
    return {k: v for k, v in {"lr": lr, "batch_size": batch_size}.items() if v is not None}


def _list(s: str, what: str) -> list[str]:
    items = [x.strip() for x in s.split(",") if x.strip()]
    if not items:
        raise ConfigError(f"{what} is empty")
    return items


def _classes(spec: str) -> list[int]:
    """``0-4`` or ``0,2,4`` or ``0-2,7`` → class ids."""
    out: list[int] = []
    try:
        for part in spec.split(","):
            part = part.strip()
            if "-" in part:
                a, b = part.split("-", 1)
                out += list(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise ConfigError(f"bad class list {spec!r}: use e.g. 0-4 or 0,2,4") from None
    return out


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items() if isinstance(v, (int, float, str, list, dict, type(None)))}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def _report(r: Any, as_json: bool, lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps({"test": r.test, "best_val_acc": r.best_val_acc, "seconds": round(r.seconds, 2),
                               "extra": _clean(r.extra)}, indent=2))
        return
    for line in lines:
        typer.echo(line)
    typer.echo(f"student test acc {_pct(r.test['acc'])}  (train {r.seconds:.1f}s)")
    if r.run_dir is not None:
        typer.echo(f"run directory: {r.run_dir}")


@app.command("mutual")
def mutual_cmd(peers: str = typer.Option("cnn_tiny,cnn_small", help="comma-separated peer models (≥ 2, may differ)"),
               T: float = typer.Option(1.0, "--T", help="temperature of the peer KL terms"),
               weight: float = typer.Option(1.0, help="weight of each peer's KL to the others"),
               data: str = DATA, subset: Optional[int] = SUBSET, epochs: int = EPOCHS, seed: int = SEED,
               lr: Optional[float] = LR, batch_size: Optional[int] = BS, out: Optional[str] = OUT,
               quiet: bool = QUIET, as_json: bool = JSON) -> None:
    """Online distillation (deep mutual learning): peers train together, each learning from the others.

    Examples:

      kdlab mutual --peers cnn_tiny,cnn_small --data digits --epochs 5

      kdlab mutual --peers cnn_tiny,cnn_tiny,mlp --data fashion-mnist --subset 10000 --epochs 5 --out runs/dml
    """
    from kdlab.schemes.mutual import mutual

    d = _data(data, subset, seed)
    r = mutual(_list(peers, "--peers"), d, epochs=epochs, T=T, weight=weight, seed=seed, out=out,
               progress=not quiet, **_opts(lr, batch_size))
    _report(r, as_json, [f"peer{i} {p['model']:<14} test acc {_pct(p['test_acc'])}  (best val {_pct(p['val_acc'])})"
                         for i, p in enumerate(r.extra["peers"])] + [f"deployed: peer{r.extra['deployed']}"])


@app.command("self-distill")
def self_distill_cmd(model: str = typer.Option("cnn_small", help="model name"),
                     kind: str = typer.Option("byot", help="byot | born-again | snapshot"),
                     generations: int = typer.Option(2, help="born-again: generations after the first"),
                     at_epoch: Optional[int] = typer.Option(None, help="snapshot: epoch whose weights teach the rest "
                                                                       "(default: half)"),
                     alpha: Optional[float] = typer.Option(None, help="KD weight (byot 0.3, born-again 0.9, snapshot 0.5)"),
                     T: Optional[float] = typer.Option(None, "--T", help="temperature (byot 3, others 4)"),
                     data: str = DATA, subset: Optional[int] = SUBSET, epochs: int = EPOCHS, seed: int = SEED,
                     lr: Optional[float] = LR, batch_size: Optional[int] = BS, out: Optional[str] = OUT,
                     quiet: bool = QUIET, as_json: bool = JSON) -> None:
    """Self-distillation: auxiliary exits taught by the deepest one (byot), born-again generations,
    or a snapshot of the model teaching its own last epochs.

    Examples:

      kdlab self-distill --kind byot --model cnn_small --data digits --epochs 5

      kdlab self-distill --kind born-again --generations 2 --model cnn_tiny --data fashion-mnist --subset 10000

      kdlab self-distill --kind snapshot --at-epoch 4 --model cnn_tiny --data digits --epochs 8
    """
    from kdlab.schemes import self_distill as sd

    d = _data(data, subset, seed)
    common = dict(epochs=epochs, seed=seed, out=out, progress=not quiet, **_opts(lr, batch_size))
    kw = {k: v for k, v in {"alpha": alpha, "T": T}.items() if v is not None}
    if kind == "byot":
        r = sd.byot(model, d, **kw, **common)
        lines = [f"exit {k:<8} test acc {_pct(v)}" for k, v in r.extra["exits"].items()]
    elif kind == "born-again":
        r = sd.born_again(model, d, generations=generations, **kw, **common)
        lines = [f"generation {g['generation']}  test acc {_pct(g['test_acc'])}" for g in r.extra["generations"]]
        lines.append(f"ensemble of generations  test acc {_pct(r.extra['ensemble_acc'])}")
    elif kind == "snapshot":
        r = sd.snapshot_distill(model, d, at_epoch=at_epoch, **kw, **common)
        lines = [f"snapshot after epoch {r.extra['snapshot_epoch']}: test acc {_pct(r.extra['teacher_acc'])}"]
    else:
        raise ConfigError(f"unknown --kind {kind!r} (byot, born-again, snapshot)")
    _report(r, as_json, lines)


@app.command("assistant")
def assistant_cmd(teacher: str = typer.Option("cnn_large", help="teacher: model name (trained here) or checkpoint"),
                  assistant: str = typer.Option("cnn_small", help="assistant model(s), comma-separated, largest first"),
                  student: str = typer.Option("cnn_tiny", help="student model"),
                  teacher_epochs: Optional[int] = typer.Option(None, help="epochs for a teacher trained here"),
                  direct: bool = typer.Option(True, help="also distill the teacher straight into the student"),
                  alpha: float = typer.Option(0.9), T: float = typer.Option(4.0, "--T"),
                  data: str = DATA, subset: Optional[int] = SUBSET, epochs: int = EPOCHS, seed: int = SEED,
                  lr: Optional[float] = LR, batch_size: Optional[int] = BS, out: Optional[str] = OUT,
                  quiet: bool = QUIET, as_json: bool = JSON) -> None:
    """Teacher-assistant KD: teacher → assistant(s) → student in one command.

    Examples:

      kdlab assistant --teacher cnn_large --assistant cnn_small --student mlp_tiny --data digits --epochs 5

      kdlab assistant --teacher runs/t/best --assistant cnn_medium,cnn_small --student cnn_tiny --data fashion-mnist
    """
    from kdlab.schemes.assistant import teacher_assistant

    d = _data(data, subset, seed)
    r = teacher_assistant(teacher, _list(assistant, "--assistant"), student, d, epochs=epochs,
                          teacher_epochs=teacher_epochs, alpha=alpha, T=T, direct=direct, seed=seed, out=out,
                          progress=not quiet, **_opts(lr, batch_size))
    lines = [f"{c['role']:<11} {c['model']:<14} test acc {_pct(c['test_acc'])}" for c in r.extra["chain"]]
    if "direct_acc" in r.extra:
        lines.append(f"direct (teacher → student, no assistant): test acc {_pct(r.extra['direct_acc'])}")
    _report(r, as_json, lines)


@app.command("multi-teacher")
def multi_teacher_cmd(teachers: str = typer.Option("cnn_small,cnn_medium", help="comma-separated teachers "
                                                   "(model names trained here, or checkpoints)"),
                      student: str = typer.Option("cnn_tiny"),
                      mode: str = typer.Option("mean", help="mean | weights | confidence | entropy | random"),
                      weights: Optional[str] = typer.Option(None, help="comma-separated weights (mode weights/random)"),
                      method: str = typer.Option("kd", help="method(s), e.g. kd or kd+fitnet"),
                      logits_from: Optional[str] = typer.Option(None, help="teacher indices giving logits, e.g. 0"),
                      features_from: Optional[str] = typer.Option(None, help="teacher indices giving features, e.g. 1"),
                      teacher_epochs: Optional[int] = typer.Option(None),
                      alpha: float = typer.Option(0.9), T: float = typer.Option(4.0, "--T"),
                      data: str = DATA, subset: Optional[int] = SUBSET, epochs: int = EPOCHS, seed: int = SEED,
                      lr: Optional[float] = LR, batch_size: Optional[int] = BS, out: Optional[str] = OUT,
                      quiet: bool = QUIET, as_json: bool = JSON) -> None:
    """Several teachers, one student: averaged, weighted, confidence/entropy-weighted per sample,
    a random teacher per iteration, or logits from one teacher and features from another.

    Examples:

      kdlab multi-teacher --teachers cnn_small,mlp --student cnn_tiny --mode confidence --data digits --epochs 5

      kdlab multi-teacher --teachers cnn_small,cnn_medium --method kd+fitnet --logits-from 0 --features-from 1
    """
    from kdlab.schemes.multi_teacher import multi_teacher

    d = _data(data, subset, seed)
    ints = lambda s: None if s is None else [int(x) for x in _list(s, "index list")]  # noqa: E731
    try:
        w = None if weights is None else [float(x) for x in _list(weights, "--weights")]
        lf, ff = ints(logits_from), ints(features_from)
    except ValueError as e:
        raise ConfigError(f"bad number in a list option: {e}") from None
    r = multi_teacher(_list(teachers, "--teachers"), student, d, mode=mode, weights=w, logits_from=lf,
                      features_from=ff, method=method, alpha=alpha, T=T, epochs=epochs, teacher_epochs=teacher_epochs,
                      seed=seed, out=out, progress=not quiet, **_opts(lr, batch_size))
    lines = [f"teacher{i} {t['model']:<14} test acc {_pct(t['test_acc'])}" for i, t in enumerate(r.extra["teachers"])]
    lines.append(f"ensemble ({mode})  test acc {_pct(r.extra['ensemble_acc'])}")
    _report(r, as_json, lines)


@app.command("amalgamate")
def amalgamate_cmd(teachers: str = typer.Option("cnn_small,cnn_small", help="comma-separated teachers, one per split"),
                   split: List[str] = typer.Option(["0-4", "5-9"], help="classes of each teacher (repeat: --split 0-4 --split 5-9)"),
                   student: str = typer.Option("cnn_tiny"),
                   combine: str = typer.Option("concat", help="concat (raw logits) | logprob"),
                   T: float = typer.Option(4.0, "--T"),
                   teacher_epochs: Optional[int] = typer.Option(None),
                   baseline: bool = typer.Option(True, help="also train the student with all labels"),
                   data: str = DATA, subset: Optional[int] = SUBSET, epochs: int = EPOCHS, seed: int = SEED,
                   lr: Optional[float] = LR, batch_size: Optional[int] = BS, out: Optional[str] = OUT,
                   quiet: bool = QUIET, as_json: bool = JSON) -> None:
    """Amalgamate teachers of disjoint class subsets into one student over all classes, with no
    joint labels.

    Examples:

      kdlab amalgamate --data fashion-mnist --subset 10000 --split 0-4 --split 5-9 --epochs 5

      kdlab amalgamate --teachers cnn_small,cnn_small,cnn_small --split 0-2 --split 3-5 --split 6-9 --data digits
    """
    from kdlab.schemes.amalgamate import amalgamate

    d = _data(data, subset, seed)
    r = amalgamate(_list(teachers, "--teachers"), [_classes(s) for s in split], student, d, combine=combine, T=T,
                   epochs=epochs, teacher_epochs=teacher_epochs, baseline=baseline, seed=seed, out=out,
                   progress=not quiet, **_opts(lr, batch_size))
    lines = [f"teacher{i} {t['model']:<12} classes {t['classes']}: test acc on its classes {_pct(t['test_acc_own_classes'])}"
             for i, t in enumerate(r.extra["teachers"])]
    lines.append(f"teachers combined ({combine}), full test set: {_pct(r.extra['union_teacher_acc'])}")
    if "baseline_acc" in r.extra:
        lines.append(f"student trained with all labels: {_pct(r.extra['baseline_acc'])}")
    _report(r, as_json, lines)


@app.command("unlabeled")
def unlabeled_cmd(teacher: str = typer.Option("cnn_small", help="teacher: model name (trained on the labeled part) "
                                              "or checkpoint"),
                  student: str = typer.Option("cnn_tiny"),
                  labeled: float = typer.Option(0.05, help="labeled fraction of the training set"),
                  alpha: float = typer.Option(0.9), T: float = typer.Option(4.0, "--T"),
                  baseline: bool = typer.Option(True, help="also train the student on the labeled part alone"),
                  data: str = DATA, subset: Optional[int] = SUBSET, epochs: int = EPOCHS, seed: int = SEED,
                  lr: Optional[float] = LR, batch_size: Optional[int] = BS, out: Optional[str] = OUT,
                  quiet: bool = QUIET, as_json: bool = JSON) -> None:
    """Less labelling: a labeled fraction plus an unlabeled pool that the teacher soft-labels.

    Examples:

      kdlab unlabeled --labeled 0.05 --data digits --epochs 5

      kdlab unlabeled --labeled 0.01 --teacher cnn_small --student cnn_tiny --data fashion-mnist --subset 10000
    """
    from kdlab.schemes.unlabeled import unlabeled

    d = _data(data, subset, seed)
    r = unlabeled(teacher, student, d, labeled=labeled, alpha=alpha, T=T, epochs=epochs, baseline=baseline, seed=seed,
                  out=out, progress=not quiet, **_opts(lr, batch_size))
    lines = [f"{r.extra['labeled']} labeled, {r.extra['pool']} unlabeled; teacher test acc {_pct(r.extra['teacher_acc'])}"]
    if "baseline_acc" in r.extra:
        lines.append(f"student on the labeled part alone: {_pct(r.extra['baseline_acc'])}")
    _report(r, as_json, lines)


@app.command("lifelong")
def lifelong_cmd(model: str = typer.Option("cnn_small"),
                 old: str = typer.Option("0-4", help="classes the old model knows"),
                 new: Optional[str] = typer.Option(None, help="classes to learn (default: all the others)"),
                 old_epochs: Optional[int] = typer.Option(None, help="epochs for the old model"),
                 T: float = typer.Option(2.0, "--T"), weight: float = typer.Option(1.0, help="distillation weight λ_o"),
                 baseline: bool = typer.Option(True, help="also fine-tune without distillation"),
                 data: str = DATA, subset: Optional[int] = SUBSET, epochs: int = EPOCHS, seed: int = SEED,
                 lr: Optional[float] = LR, batch_size: Optional[int] = BS, out: Optional[str] = OUT,
                 quiet: bool = QUIET, as_json: bool = JSON) -> None:
    """Learning without Forgetting: learn new classes from new data only while distilling the old
    model's answers; reports old- and new-class accuracy with and without distillation.

    Examples:

      kdlab lifelong --old 0-4 --data digits --epochs 5

      kdlab lifelong --model cnn_small --old 0-4 --new 5-9 --data fashion-mnist --subset 10000
    """
    from kdlab.schemes.lifelong import lifelong

    d = _data(data, subset, seed)
    r = lifelong(model, d, _classes(old), None if new is None else _classes(new), epochs=epochs, old_epochs=old_epochs,
                 T=T, weight=weight, baseline=baseline, seed=seed, out=out, progress=not quiet, **_opts(lr, batch_size))
    lines = [f"old model on old classes: {_pct(r.extra['before'].get('old_acc'))}"]
    for name in ("lwf", "finetune"):
        if name in r.extra:
            a = r.extra[name]
            lines.append(f"{name:<8} old {_pct(a.get('old_acc'))} (task-aware {_pct(a.get('old_acc_task_aware'))})  "
                         f"new {_pct(a.get('new_acc'))} (task-aware {_pct(a.get('new_acc_task_aware'))})  "
                         f"all {_pct(a.get('all_acc'))}")
    _report(r, as_json, lines)


@app.command("cross-modal")
def cross_modal_cmd(teacher: str = typer.Option("cnn_small", help="model name (trained here on its view), checkpoint, "
                                                "or a .npy/.npz file of per-sample outputs"),
                    student: str = typer.Option("cnn_tiny"),
                    teacher_view: str = typer.Option("full", help="full | lowres:K | blur:K | edges | gray | channel:i"),
                    student_view: str = typer.Option("lowres:2", help="the student's view (same choices)"),
                    alpha: float = typer.Option(0.9, help="KD weight; 1 = learn from the teacher's outputs alone"),
                    T: float = typer.Option(4.0, "--T"),
                    teacher_epochs: Optional[int] = typer.Option(None),
                    baseline: bool = typer.Option(True, help="also train the student on its view from labels"),
                    save_teacher_outputs: Optional[str] = typer.Option(None, help="write the teacher's outputs over "
                                                                       "the training split to this .npz"),
                    data: str = DATA, subset: Optional[int] = SUBSET, epochs: int = EPOCHS, seed: int = SEED,
                    lr: Optional[float] = LR, batch_size: Optional[int] = BS, out: Optional[str] = OUT,
                    quiet: bool = QUIET, as_json: bool = JSON) -> None:
    """Cross-modal / black-box distillation: the teacher sees one view, the student another
    (paired by sample id), or the teacher is only a file of per-sample outputs.

    Examples:

      kdlab cross-modal --teacher cnn_small --student cnn_tiny --student-view lowres:2 --data digits --epochs 5

      kdlab cross-modal --teacher cnn_small --student-view edges --save-teacher-outputs t.npz --data digits

      kdlab cross-modal --teacher t.npz --student-view full --alpha 1 --data digits --epochs 5
    """
    from kdlab.schemes.cross_modal import cross_modal

    d = _data(data, subset, seed)
    r = cross_modal(teacher, student, d, teacher_view=teacher_view, student_view=student_view, alpha=alpha, T=T,
                    epochs=epochs, teacher_epochs=teacher_epochs, baseline=baseline,
                    save_teacher_outputs=save_teacher_outputs, seed=seed, out=out, progress=not quiet,
                    **_opts(lr, batch_size))
    lines = [f"teacher ({teacher_view}) test acc {_pct(r.extra['teacher_acc'])}; student sees {student_view}"]
    if "baseline_acc" in r.extra:
        lines.append(f"student from labels alone: {_pct(r.extra['baseline_acc'])}")
    if r.extra.get("teacher_outputs"):
        lines.append(f"teacher outputs written to {r.extra['teacher_outputs']}")
    _report(r, as_json, lines)
