"""``kdlab cache build`` / ``kdlab cache info``: teacher-output caches (see kdlab.teachers.cache_build and
kdlab.teachers.cached)."""
from __future__ import annotations

import json
from typing import Any, Optional

import typer

from kdlab.cli.common import EXTRA, build_config
from kdlab.cli.main import app

cache_app = typer.Typer(no_args_is_help=True, help="Build and inspect teacher-output caches.")
app.add_typer(cache_app, name="cache")


@cache_app.command("build", context_settings=EXTRA)
def build(ctx: typer.Context,
          config: Optional[str] = typer.Argument(None,
                                                 help="YAML config (optional; its teacher, data and cache_* keys)"),
          teacher: Optional[str] = typer.Option(None, help="teacher checkpoint (a run's best/last)"),
          data: Optional[str] = typer.Option(None, help="dataset name"),
          out: Optional[str] = typer.Option(None, help="cache directory (default: the config's cache, "
                                                       "else runs/cache-<data>)"),
          views: Optional[int] = typer.Option(None, help="augmented views per sample (required with augmentation)"),
          topk: Optional[int] = typer.Option(None, help="store top-k log-probabilities instead of full logits"),
          dtype: Optional[str] = typer.Option(None, help="float32 (default) or float16"),
          features: Optional[str] = typer.Option(None, help="teacher features to store too, "
                                                            "comma-separated (e.g. pooled)"),
          batch_size: int = typer.Option(512, help="teacher batch size"),
          accelerate: str = typer.Option("auto", help="teacher pass: auto | eager | onnx | fold_bn "
                                                      "(checked against eager)"),
          force: bool = typer.Option(False, help="rebuild even if a matching cache exists")) -> None:
    """Run the teacher once over every (sample, view) of the training split and store its outputs.

    `kdlab distill ... cache.dir=DIR` then reads them instead of running the teacher (same keys).

    Examples:

      kdlab cache build --teacher runs/t/best --data fashion-mnist --out runs/cache-fm --dtype float16

      kdlab cache build configs/fmnist_kd.yaml cache.dir=runs/cache-fm cache.topk=10
    """
    from kdlab.data import load_data_spec
    from kdlab.errors import ConfigError
    from kdlab.teachers.cache_build import AUGMENT_NEEDS_VIEWS, build_cache, ensure_cache
    from kdlab.teachers.resolve import resolve_teacher

    flags = {"teacher.checkpoint": teacher, "data.name": data, "cache.dir": out, "cache.views": views,
             "cache.topk": topk, "cache.dtype": dtype,
             "cache.features": None if features is None else [f.strip() for f in features.split(",") if f.strip()]}
    cfg = build_config(config, ctx.args, flags)
    d = load_data_spec(cfg.data)
    if cfg.teacher is None:
        raise ConfigError("cache build needs a teacher: --teacher PATH (or teacher.* in the config)")
    t = resolve_teacher(cfg.teacher, d)
    c = cfg.cache
    views_given = c.views if c is not None else None
    if d.augment is not None and not views_given:
        raise ConfigError(AUGMENT_NEEDS_VIEWS.replace("cache.views=N", "--views N (cache.views=N)"))
    path = c.dir if c is not None else f"runs/cache-{d.name}"
    nviews = views_given if d.augment is not None else 1
    k, dt, feats = (c.topk, c.dtype, c.features) if c is not None else (None, None, [])
    if force:
        build_cache(t, d, path, views=nviews, k=k, dtype=dt or "float32", features=feats, batch_size=batch_size,
                    accelerate=accelerate)
    else:
        ct = ensure_cache(path, t, d, exact=True, views=nviews, k=k, dtype=dt or "float32", features=feats,
                          batch_size=batch_size, accelerate=accelerate)
        ct.close()
        if not ct.built:
            typer.echo(f"teacher cache {path} is up to date (checksums verified)")
    from kdlab.store import read_manifest

    for key, value in describe(read_manifest(path)):
        typer.echo(f"{key:18s} {value}")
    typer.echo(f"use it with: kdlab distill ... cache.dir={path}"
               + (f" cache.views={nviews}" if d.augment is not None else ""))


@cache_app.command("info")
def info(path: str = typer.Argument(..., help="cache directory"),
         verify: bool = typer.Option(True, "--verify/--no-verify", help="check every file's SHA-256"),
         as_json: bool = typer.Option(False, "--json", help="print the manifest as JSON")) -> None:
    """Describe a cache (what teacher, data and layout it holds) and check its checksums."""
    from kdlab.store import read_manifest, verify_store

    manifest = verify_store(path) if verify else read_manifest(path)
    if as_json:
        typer.echo(json.dumps(manifest, indent=2))
        return
    for k, v in describe(manifest):
        typer.echo(f"{k:18s} {v}")
    typer.echo(f"{'checksums':18s} " + (f"ok ({len(manifest['arrays'])} files)" if verify else "not checked"))


def describe(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """Human-readable (field, value) rows of a cache manifest, for ``kdlab cache info``."""
    m = manifest
    size = sum(a["bytes"] for a in m["arrays"].values())
    aug = m.get("augment")
    rows = [("dataset", f"{m.get('dataset')} (fingerprint {m.get('data')})"),
            ("samples x views", f"{m['num_samples']} x {m['views']}"),
            ("classes", str(m.get("num_classes"))),
            ("stored", ("full logits" if m.get("kind") == "logits" else f"top-{m.get('k')} log-probabilities")
             + f", {m.get('dtype')}"),
            ("features", ", ".join(m.get("features") or []) or "-"),
            ("augmentation", "off" if aug is None
             else f"crop pad {aug['pad']}, flip {aug['flip']}, seed {m.get('seed')}"),
            ("teacher sha256", str(m.get("teacher"))),
            ("teacher transform", "none" if m.get("teacher_transform") is None
             else f"sha256 {m['teacher_transform'][:16]}…"),
            ("built", f"{m.get('created')} in {m.get('build_seconds')}s ({m.get('built_with')})"),
            ("size", f"{size / 2**20:.1f} MiB")]
    rows += [(f"  {n}", f"{a['shape']} {a['dtype']} sha256 {a['sha256'][:16]}…") for n, a in m["arrays"].items()]
    return rows

