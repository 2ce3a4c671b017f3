"""What a study leaves: ``best.yaml`` for ``kdlab distill``, ``trials.csv``, the history and importance
plots and ``report.md``."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kdlab.config import RunConfig, load_config

if TYPE_CHECKING:
    import optuna

    from kdlab.tune import TeacherSource

from kdlab.tune.space import TuneSpec, require_optuna

log = logging.getLogger("kdlab")



# ---------------------------------------------------------------- outputs

def best_run_config(cfg: RunConfig, trial: "optuna.trial.FrozenTrial", out: str) -> dict[str, Any]:
    """The run config of a trial at the full ``train.epochs``, live teacher, for ``kdlab distill``."""
    raw = cfg.model_dump(mode="json", exclude_none=True)
    raw.pop("cache", None)  # the final run sees fresh augmentations every epoch (the cache held the trials' views)
    raw["methods"] = trial.user_attrs["methods"]
    raw["train"]["lr"] = trial.user_attrs["lr"]
    raw["out"] = out
    load_config(base=json.loads(json.dumps(raw)))  # it must validate as it will be read
    return raw


def write_outputs(study: "optuna.Study", cfg: RunConfig, spec: TuneSpec, directory: Path,
                  source: TeacherSource | None = None) -> tuple[Path | None, Path | None, str | None]:
    """``best.yaml``, ``trials.csv``, ``history.png``, ``importance.png`` and ``report.md``."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    rows = [{"number": t.number, "state": t.state.name, "value": t.value if t.value is not None else
             (max(t.intermediate_values.values()) if t.intermediate_values else None),
             "epochs": len(t.intermediate_values), "teacher": t.user_attrs.get("teacher"),
             "seconds": t.user_attrs.get("seconds"), "params": json.dumps(t.params, sort_keys=True)}
            for t in trials]
    with open(directory / "trials.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["number"])
        w.writeheader()
        w.writerows(rows)
    if not done:
        return None, None, None
    best = study.best_trial
    best_path = directory / "best.yaml"
    best_path.write_text(yaml.safe_dump(best_run_config(cfg, best, str(directory / "final")), sort_keys=False))
    command = f"kdlab distill {best_path}"
    imp = importances(study)
    plots = plot_study(study, directory, imp)
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    teach = {w: sum(t.user_attrs.get("teacher") == w for t in trials) for w in ("cache", "live", "none")}
    lines = [f"# Tuning study `{study.study_name}`", "",
             f"Data `{cfg.data.name}`, student `{cfg.student.name}`, {spec.epochs} epochs per trial, "
             f"pruner {spec.pruner}; {len(done)} complete, {pruned} pruned, "
             f"{sum(t.state == TrialState.FAIL for t in trials)} failed trials. Chosen on the validation split; "
             "the test split was sealed throughout.", "",
             f"Teacher outputs: {teach['cache']} trials read the shared cache, {teach['live']} ran the live teacher"
             + (" (methods that need feature maps cannot read a cache)" if teach["live"] else "")
             + (f"; the cache was ready in {source.build_seconds:.1f}s" if source and source.build_seconds else "")
             + ".", "",
             f"**Best trial {best.number}**: validation accuracy {100 * best.value:.2f}% "  # type: ignore[operator]
             f"with {json.dumps(best.params)}.", "",
             f"Train it fully: `{command}`", "",
             "## Optimisation history", "", f"![history]({plots[0].name})" if plots else "(no plot)", "",
             "## Hyperparameter importances", ""]
    if imp:
        lines += ["fANOVA importance (Optuna's FanovaImportanceEvaluator, seed 0) over the parameters every "
                  "complete trial has:", "",
                  "| parameter | importance |", "|---|---|", *[f"| {k} | {v:.3f} |" for k, v in imp.items()], ""]
        if len(plots) > 1:
            lines += [f"![importances]({plots[1].name})", ""]
    else:
        lines += ["Not computable yet (needs at least two complete trials that vary a parameter).", ""]
    lines += ["## Trials", "", "| # | state | val acc % | epochs | teacher | s | parameters |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        v = "" if r["value"] is None else f"{100 * float(r['value']):.2f}"
        lines.append(f"| {r['number']} | {r['state']} | {v} | {r['epochs']} | {r['teacher']} | {r['seconds']} | "
                     f"`{r['params']}` |")
    report = directory / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return best_path, report, command


def importances(study: "optuna.Study") -> dict[str, float]:
    optuna = require_optuna()

    try:
        ev = optuna.importance.FanovaImportanceEvaluator(seed=0)
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study, evaluator=ev).items()}
    except (RuntimeError, ValueError, ZeroDivisionError):  # too few trials, or nothing varied
        return {}


def plot_study(study: "optuna.Study", directory: Path, imp: dict[str, float]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    out: list[Path] = []
    trials = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = [t.number for t in trials if t.state == TrialState.COMPLETE]
    ys = [100 * float(t.value) for t in trials if t.state == TrialState.COMPLETE]  # type: ignore[arg-type]
    ax.scatter(xs, ys, s=14, label="complete")
    pr = [(t.number, 100 * t.intermediate_values[max(t.intermediate_values)]) for t in trials
          if t.state == TrialState.PRUNED and t.intermediate_values]
    if pr:
        ax.scatter([p[0] for p in pr], [p[1] for p in pr], s=14, marker="x", color="grey", label="pruned (last)")
    best, run_best = float("-inf"), []
    for x, y in zip(xs, ys):
        best = max(best, y)
        run_best.append(best)
    ax.step(xs, run_best, where="post", color="C3", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.append(directory / "history.png")
    fig.savefig(out[-1], dpi=100)
    plt.close(fig)
    if imp:
        fig, ax = plt.subplots(figsize=(6, 0.4 * len(imp) + 1))
        names = list(imp)[::-1]
        ax.barh(names, [imp[n] for n in names])
        ax.set_xlabel("importance (fANOVA)")
        fig.tight_layout()
        out.append(directory / "importance.png")
        fig.savefig(out[-1], dpi=100)
        plt.close(fig)
    return out

