from __future__ import annotations

from typing import Any, Optional

import typer

from kdlab.cli.common import (
    BATCH_SIZE,
    EPOCHS,
    EXTRA,
    JSON,
    LR,
    OUT,
    QUIET,
    RESUME,
    ROOT,
    SEED,
    SUBSET,
    run_flags,
    run_scheme_command,
)
from kdlab.cli.common import SCHEME_HELP as H
from kdlab.cli.main import app

# a small GPT on CPU: AdamW with gradient clipping, one pass over the corpus
LM_BASE: dict[str, Any] = {
    "data": {"name": "bbc-news", "options": {"tokenizer": "byte", "seq_len": 128}},
    "train": {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.01, "epochs": 1, "batch_size": 32,
              "grad_clip": 1.0, "eval_batch_size": 64},
}


@app.command("lm-distill", context_settings=EXTRA)
def lm_distill_cmd(ctx: typer.Context,
                   config: Optional[str] = typer.Argument(None, help=H["config"]),
                   teacher: Optional[str] = typer.Option(None, help="token model trained here (gpt), a kdlab "
                                                         "checkpoint, or hf:<local dir> (default gpt)"),
                   student: Optional[str] = typer.Option(None, help="token model (gpt) or hf:<local dir>"),
                   loss: Optional[str] = typer.Option(None, help="fkl | rkl | jsd | skl | tv (default fkl)"),
                   alpha: Optional[float] = typer.Option(None, help="divergence weight; CE gets 1 - alpha (default 1)"),
                   T: Optional[float] = typer.Option(None, "--T", help="temperature (default 1)"),
                   beta: Optional[float] = typer.Option(None, help="JSD mixing weight (default 0.5)"),
                   lmbda: Optional[float] = typer.Option(None, help="fraction of on-policy batches (default 0)"),
                   teacher_epochs: Optional[int] = typer.Option(None, help="epochs of a teacher trained here"),
                   offline_topk: Optional[int] = typer.Option(None, help="train from the teacher's cached top-k "
                                                              "log-probabilities"),
                   align: Optional[str] = typer.Option(None, help="none | exact: vocabulary alignment (default none)"),
                   baseline: Optional[bool] = typer.Option(None, "--baseline/--no-baseline",
                                                           help="also train the student alone (default on)"),
                   data: Optional[str] = typer.Option(None, help="bbc-news (default) or text (with --root)"),
                   root: Optional[str] = ROOT,
                   tokenizer: Optional[str] = typer.Option(None, help="byte (default), char or a local HF "
                                                           "tokenizer directory"),
                   seq_len: Optional[int] = typer.Option(None, help="tokens per training sequence (default 128)"),
                   subset: Optional[int] = SUBSET,
                   epochs: Optional[int] = EPOCHS,
                   seed: Optional[int] = SEED, lr: Optional[float] = LR,
                   batch_size: Optional[int] = BATCH_SIZE,
                   out: Optional[str] = OUT,
                   resume: bool = RESUME,
                   quiet: bool = QUIET,
                   as_json: bool = JSON) -> None:
    """Distil a causal language model into a smaller one, token by token.

    Examples:

      kdlab lm-distill --subset 200 --epochs 1 --loss jsd

      kdlab lm-distill --loss fkl --lmbda 0.5 --teacher runs/lm/teacher/best

      kdlab lm-distill --data text --root corpus.jsonl --tokenizer char --offline-topk 32
    """
    def lines(r: Any) -> list[str]:
        e = r.extra
        out = [f"teacher test perplexity {e['teacher']['test']['ppl']:.3f}"]
        if "baseline" in e:
            out.append(f"student alone test perplexity {e['baseline']['test']['ppl']:.3f}")
        if "offline" in e:
            out.append(f"offline top-{e['offline']['k']}: {e['offline']['bytes_per_token']} bytes/token")
        out.append(f"{e['train_tokens_per_s']:.0f} training tokens/s, peak RSS {e['peak_rss_mb']:.0f} MiB")
        return out

    flags = run_flags(data, root, subset, epochs, seed, lr, batch_size, out)
    flags.update({"data.options.tokenizer": tokenizer, "data.options.seq_len": seq_len})
    run_scheme_command(
        "lm-distill", config, ctx.args, flags=flags,
        scheme={"teacher": teacher, "student": student, "loss": loss, "alpha": alpha, "T": T, "beta": beta,
                "lmbda": lmbda, "teacher_epochs": teacher_epochs, "offline_topk": offline_topk, "align": align,
                "baseline": baseline},
        resume=resume, quiet=quiet, as_json=as_json, lines=lines, base=LM_BASE)
