"""Shared CLI plumbing: config file + ``key=value`` overrides + convenience flags → RunConfig."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import typer

from kdlab.config import RunConfig, load_config
from kdlab.errors import ConfigError

EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


def split_args(config: str | None, extra: list[str]) -> tuple[str | None, list[str]]:
    """The first positional may be a YAML file or already an override."""
    overrides = list(extra)
    for a in ([config] if config else []) + overrides:
        if a.startswith("-"):
            raise ConfigError(f"unknown option {a.split('=')[0]!r} (see --help)")
    if config is not None and "=" in config:
        overrides.insert(0, config)
        config = None
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"unexpected argument {o!r}: overrides look like key.sub=value")
    return config, overrides


def build_config(config: str | None, extra: list[str], flags: dict[str, Any], base: dict[str, Any] | None = None,
                 objective: tuple[str | None, float | None, float | None] = (None, None, None)) -> RunConfig:
    """Precedence: base < config file < flags < key=value overrides.

    ``objective``: ``(--method, --alpha, --T)``, parsed by :func:`kdlab.objective.parse_objective`;
    without ``--method``, α and T apply to the methods of the config file (or ``base``).
    """
    config, overrides = split_args(config, extra)
    flag_overrides = [f"{k}={_yaml(v)}" for k, v in flags.items() if v is not None]
    method, alpha, T = objective
    if method is not None or alpha is not None or T is not None:
        from kdlab.objective import parse_objective

        current = load_config(config, base=base).methods
        methods = parse_objective(method, alpha=alpha, T=T, base=[m.model_dump() for m in current])
        flag_overrides.append(f"methods={_yaml(methods)}")
    return load_config(config, flag_overrides + overrides, base=base)


def _yaml(v: Any) -> str:
    import yaml

    if isinstance(v, str):
        return v if not any(c in v for c in ":{}[],#") else yaml.safe_dump(v).strip().removesuffix("\n...")
    return yaml.safe_dump(v, default_flow_style=True, width=1 << 20).strip().removesuffix("\n...")


def print_summary(result: Any) -> None:
    from kdlab.engine.distributed import is_main

    if not is_main():  # under torchrun only rank 0 reports
        return
    t = result.test
    typer.echo(f"test: acc {100 * t['acc']:.2f}%  macro-F1 {100 * t['f1']:.2f}%  ECE {t['ece']:.4f}  "
               f"(best val {100 * result.best_val_acc:.2f}%, {result.seconds:.1f}s)")
    if result.run_dir is not None:
        typer.echo(f"run directory: {result.run_dir}")


def ensure_exists(path: str, what: str) -> Path:
    p = Path(path)
    if not p.exists() and not Path(path + ".safetensors").exists():
        raise ConfigError(f"{what} {path} not found")
    return p


# ---------------------------------------------------------------- scheme commands

SCHEME_HELP = {
    "config": "YAML config with a scheme: section (kdlab init --scheme NAME writes one)",
    "data": "dataset name (kdlab datasets)", "subset": "keep this many training (and at most this many test) samples",
    "epochs": "epochs of the scheme's main training", "lr": "learning rate (default 0.05, SGD)",
    "batch_size": "batch size (default 128)", "out": "run directory (default runs/<scheme>-<data>-s<seed>)",
    "resume": "continue an interrupted run in --out (finished stages are reused)", "quiet": "no progress bars",
    "json": "print the full result as JSON",
}


# the options every scheme command shares (one definition, reused by each command's signature)
DATA = typer.Option(None, help=SCHEME_HELP["data"])
ROOT = typer.Option(None, help="dataset file or directory (data.root)")
SUBSET = typer.Option(None, help=SCHEME_HELP["subset"])
EPOCHS = typer.Option(None, help=SCHEME_HELP["epochs"])
SEED = typer.Option(None, help="seed of the weights and the batch order (the split follows data.split_seed)")
LR = typer.Option(None, help=SCHEME_HELP["lr"])
BATCH_SIZE = typer.Option(None, help=SCHEME_HELP["batch_size"])
OUT = typer.Option(None, help=SCHEME_HELP["out"])
RESUME = typer.Option(False, help=SCHEME_HELP["resume"])
QUIET = typer.Option(False, help=SCHEME_HELP["quiet"])
JSON = typer.Option(False, "--json", help=SCHEME_HELP["json"])


def run_flags(data: str | None, root: str | None, subset: int | None, epochs: int | None, seed: int | None,
              lr: float | None, batch_size: int | None, out: str | None) -> dict[str, Any]:
    """The shared options as config keys."""
    return {"data.name": data, "data.root": root, "data.subset": subset, "train.epochs": epochs, "seed": seed,
            "train.lr": lr, "train.batch_size": batch_size, "out": out}


def run_scheme_command(name: str, config: str | None, extra: list[str], *, flags: dict[str, Any],
                       scheme: dict[str, Any], resume: bool, quiet: bool, as_json: bool,
                       lines: Callable[[Any], list[str]], base: dict[str, Any] | None = None) -> None:
    """A scheme command: YAML config (optional) < flags (``scheme:`` options and run keys) <
    ``key=value`` overrides → :func:`kdlab.schemes.run_scheme` → printed result."""
    from kdlab.schemes import run_scheme

    section = {k: v for k, v in scheme.items() if v is not None}
    run_flags = {**flags, **{f"scheme.{k}": v for k, v in section.items()}}
    # a deep copy: loading the config must never write into the caller's (module-level) base
    cfg = build_config(config, extra, run_flags, base={**copy.deepcopy(base or {}), "scheme": {"name": name}})
    r = run_scheme(name, cfg, resume=resume, progress=not quiet)
    from kdlab.engine.distributed import is_main

    if not is_main():
        return
    if as_json:
        typer.echo(json.dumps({"test": r.test, "best_val_acc": r.best_val_acc, "seconds": round(r.seconds, 2),
                               "run_dir": None if r.run_dir is None else str(r.run_dir), "extra": r.extra},
                              indent=2, default=str))
        return
    for line in lines(r):
        typer.echo(line)
    if "ppl" in r.test:  # a language model
        typer.echo(f"student test perplexity {r.test['ppl']:.3f}  next-token acc {pct(r.test['acc'])}  "
                   f"(train {r.seconds:.1f}s)")
    else:
        typer.echo(f"student test acc {pct(r.test['acc'])}  (train {r.seconds:.1f}s)")
    if r.run_dir is not None:
        typer.echo(f"run directory: {r.run_dir}")


def pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def csv_list(s: str | None, what: str) -> list[str] | None:
    """``a,b,c`` → ``["a", "b", "c"]`` (None stays None)."""
    if s is None:
        return None
    items = [x.strip() for x in s.split(",") if x.strip()]
    if not items:
        raise ConfigError(f"{what} is empty")
    return items


def class_list(spec: str | None, what: str) -> list[int] | None:
    """``0-4`` or ``0,2,4`` or ``0-2,7`` → class ids (None stays None); ``what`` names the flag."""
    if spec is None:
        return None
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
        raise ConfigError(f"bad class list {what} {spec!r}: use e.g. 0-4 or 0,2,4") from None
    return out
