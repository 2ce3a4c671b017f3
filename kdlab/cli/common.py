"""Shared CLI plumbing: config file + ``key=value`` overrides + convenience flags → RunConfig."""
from __future__ import annotations

from pathlib import Path
from typing import Any

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


def build_config(config: str | None, extra: list[str], flags: dict[str, Any], base: dict[str, Any] | None = None) -> RunConfig:
    """Precedence: base < config file < flags < key=value overrides."""
    config, overrides = split_args(config, extra)
    flag_overrides = [f"{k}={_yaml(v)}" for k, v in flags.items() if v is not None]
    return load_config(config, flag_overrides + overrides, base=base)


def _yaml(v: Any) -> str:
    import yaml

    if isinstance(v, str):
        return v if not any(c in v for c in ":{}[],#") else yaml.safe_dump(v).strip().removesuffix("\n...")
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("\n...")


def methods_flag(spec: str | None, alpha: float | None, T: float | None) -> list[dict[str, Any]] | None:
    """``--method kd+fitnet --alpha 0.9 --T 4`` → the methods list (CE at 1 − α)."""
    if spec is None:
        return None
    items = [{"name": s.strip()} for s in spec.split("+") if s.strip()]
    if not items:
        raise ConfigError("--method is empty")
    ce = 1.0
    if alpha is not None:
        if not 0 <= alpha <= 1:
            raise ConfigError(f"--alpha must be in [0, 1], got {alpha}")
        items[0]["weight"], ce = alpha, 1 - alpha
    if T is not None:
        items[0]["T"] = T
    return [{"name": "ce", "weight": ce}, *items]


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
