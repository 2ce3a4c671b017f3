"""Self-distillation: a network teaches itself, no separately trained teacher.

* :func:`byot` — Be Your Own Teacher (Zhang, Song, Gao, Chen, Bao, Ma; ICCV 2019): auxiliary
  classifiers on the shallower stages learn from the deepest classifier (KD on logits) and from
  its last feature map (L2 hint), which also trains the shallow layers harder.
* :func:`born_again` — Born-Again Networks (Furlanello, Lipton, Tschannen, Itti, Anandkumar;
  ICML 2018): generation k+1 (same architecture, fresh weights) is distilled from generation k.
* :func:`snapshot_distill` — for the last epochs the student is supervised by a frozen copy of
  itself taken at an earlier epoch.
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.api import Result, distill, evaluate, get_data, train
from kdlab.core import Batch, DataInfo, Method, Outputs
from kdlab.data import DataSplits, Split
from kdlab.engine.distiller import Distiller
from kdlab.errors import ConfigError, IncompatibleError
from kdlab.evaluate.metrics import classification_metrics
from kdlab.methods import create_method
from kdlab.methods._common import kl_div_soft
from kdlab.methods._connectors import stage_keys
from kdlab.models.contract import as_outputs
from kdlab.schemes._common import finish, logit_method, make_model, schedule, sub_dir
from kdlab.teachers.frozen import FrozenTeacher


# ---------------------------------------------------------------- (a) Be Your Own Teacher

class ExitHead(nn.Module):
    """Auxiliary classifier on a shallow stage: a bottleneck that maps the stage's feature map to
    the deepest stage's shape (1×1 conv to its channels, pool to its size, 3×3 conv; BN+ReLU after
    each conv), then global pooling and a linear classifier. 2-D features: Linear+BN+ReLU."""

    def __init__(self, shallow: torch.Size, deep: torch.Size, num_classes: int) -> None:
        super().__init__()
        if len(shallow) == 4 and len(deep) == 4:
            c, cd, size = shallow[1], deep[1], tuple(deep[2:])
            self.bottleneck: nn.Module = nn.Sequential(
                nn.Conv2d(c, cd, 1, bias=False), nn.BatchNorm2d(cd), nn.ReLU(inplace=True),
                nn.AdaptiveAvgPool2d(size),
                nn.Conv2d(cd, cd, 3, padding=1, bias=False), nn.BatchNorm2d(cd), nn.ReLU(inplace=True))
            self.pool: nn.Module = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        elif len(shallow) == 2 and len(deep) == 2:
            self.bottleneck = nn.Sequential(nn.Linear(shallow[1], deep[1]), nn.BatchNorm1d(deep[1]), nn.ReLU(inplace=True))
            self.pool = nn.Identity()
        else:
            raise IncompatibleError(f"exit head: cannot map a feature of shape {tuple(shallow)} to {tuple(deep)}")
        self.fc = nn.Linear(deep[1], num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.bottleneck(x)
        return f, self.fc(self.pool(f))


class SelfDistiller(nn.Module):
    """BYOT trainable around any model whose Outputs have stage features ``layer1..layerN``.

    The deepest classifier (the model's own head) trains on labels. Each shallower stage i gets an
    :class:`ExitHead` trained with ``(1 − alpha)·CE + alpha·T²·KL(deepest ‖ exit_i) + hint·‖F_i − F_N‖²``
    (deepest logits and feature map detached). Terms: ``ce``, ``layer1/ce``, ``layer1/kd``,
    ``layer1/hint``, … ``student`` is the model itself (the heads are not part of its checkpoint).

    The paper gives no loss weights; the defaults (alpha 0.3, T 3, hint 0.03) are this
    implementation's choice.
    """

    def __init__(self, model: nn.Module, T: float = 3.0, alpha: float = 0.3, hint: float = 0.03) -> None:
        super().__init__()
        if T <= 0 or not 0 <= alpha <= 1:
            raise ConfigError(f"need T > 0 and alpha in [0, 1], got T={T}, alpha={alpha}")
        self.student = model
        self.T, self.alpha, self.hint = T, alpha, hint
        self.heads = nn.ModuleDict()
        self.deep_key = ""

    @torch.no_grad()
    def prepare(self, batch: Batch, info: DataInfo) -> None:
        was = self.student.training
        self.student.eval()
        s = as_outputs(self.student(batch.inputs))
        self.student.train(was)
        keys = stage_keys(s)
        if len(keys) < 2:
            raise IncompatibleError(f"BYOT needs at least two stage features 'layer1'..'layerN'; the model has "
                                    f"{sorted(s.features)}")
        self.deep_key = keys[-1]
        deep = s.features[self.deep_key].shape
        for k in keys[:-1]:
            self.heads[k] = ExitHead(s.features[k].shape, deep, s.logits.shape[-1]).to(s.logits.device)

    def forward(self, batch: Batch) -> tuple[Outputs, dict[str, Tensor]]:
        s = as_outputs(self.student(batch.inputs))
        y = batch.targets
        terms: dict[str, Tensor] = {}
        if y is not None:
            terms["ce"] = F.cross_entropy(s.logits, y)
        t_logits, t_feat = s.logits.detach(), s.features[self.deep_key].detach()
        for k, head in self.heads.items():
            f, logits = head(s.features[k])
            if y is not None:
                terms[f"{k}/ce"] = (1 - self.alpha) * F.cross_entropy(logits, y)
            terms[f"{k}/kd"] = self.alpha * self.T * self.T * kl_div_soft(logits, t_logits, self.T)
            terms[f"{k}/hint"] = self.hint * F.mse_loss(f, t_feat)
        return s, terms

    @torch.no_grad()
    def exit_logits(self, split: Split, batch_size: int = 512) -> dict[str, Tensor]:
        """Logits of every exit (``layer1`` …, ``final``) over a split, in eval mode."""
        was = self.training
        self.eval()
        out: dict[str, list[Tensor]] = {k: [] for k in [*self.heads, "final"]}
        for start in range(0, len(split), batch_size):
            s = as_outputs(self.student(split.gather(torch.arange(start, min(start + batch_size, len(split))))))
            out["final"].append(s.logits)
            for k, head in self.heads.items():
                out[k].append(head(s.features[k])[1])
        self.train(was)
        return {k: torch.cat(v) for k, v in out.items()}


def byot(model: str | nn.Module, data: str | DataSplits, *, epochs: int = 10, T: float = 3.0, alpha: float = 0.3,
         hint: float = 0.03, seed: int = 0, out: str | None = None, progress: bool = False,
         **train_options: Any) -> Result:
    """Be Your Own Teacher: train ``model`` with auxiliary exits distilled from its deepest classifier.

    ``Result.student`` is the full model (best validation epoch); ``Result.extra["exits"]`` has the
    test accuracy of every exit, of the final classifier and of the ensemble of all exits.
    """
    d = get_data(data, seed=seed)
    sd = SelfDistiller(make_model(model, d, seed), T=T, alpha=alpha, hint=hint)
    best: dict[str, Any] = {"acc": -1.0, "heads": None}

    def keep_heads(epoch: int, rec: dict[str, Any]) -> None:  # heads of the epoch whose student is kept
        if rec["val_acc"] > best["acc"]:
            best["acc"], best["heads"] = rec["val_acc"], copy.deepcopy(sd.heads.state_dict())

    r = finish(sd, d, schedule(epochs, train_options), seed=seed, progress=progress, out=out,
               on_epoch_end=keep_heads, command="byot")
    if best["heads"] is not None:
        sd.heads.load_state_dict(best["heads"])
    logits = sd.exit_logits(d.test)
    exits = {k: classification_metrics(v, d.test.y, d.num_classes)["acc"] for k, v in logits.items()}
    ens = torch.stack([v.softmax(-1) for v in logits.values()]).mean(0)
    exits["ensemble"] = float((ens.argmax(1) == d.test.y).double().mean())
    r.extra.update(exits=exits, heads=sd.heads)
    return r


# ---------------------------------------------------------------- (b) born-again generations

def born_again(model: str | nn.Module, data: str | DataSplits, *, generations: int = 3, epochs: int = 10,
               alpha: float = 0.9, T: float = 4.0, method: str = "kd", teacher: Any = None, seed: int = 0,
               out: str | None = None, progress: bool = False, **train_options: Any) -> Result:
    """Born-again networks: generation 0 learns from labels (or is ``teacher``, if given); each
    next generation, same architecture and fresh weights, is distilled from the previous one.

    ``model`` must be a model name (each generation is built fresh). Returns the last generation;
    ``Result.extra["generations"]`` lists each generation's test accuracy and
    ``extra["ensemble_acc"]`` the accuracy of averaging all generations' probabilities (the BAN
    ensemble).
    """
    if not isinstance(model, str):
        raise ConfigError("born_again needs a model name: every generation starts from fresh weights")
    if generations < 1:
        raise ConfigError(f"generations must be >= 1, got {generations}")
    d = get_data(data, seed=seed)
    gens: list[Result] = []
    prev: Any = teacher
    if prev is None:
        gens.append(train(model, d, epochs=epochs, seed=seed, out=sub_dir(out, "gen0"), progress=progress, **train_options))
        prev = gens[-1].student
    for g in range(1, generations + 1):
        r = distill(prev, model, d, method=method, alpha=alpha, T=T, epochs=epochs, seed=seed + g,
                    out=sub_dir(out, f"gen{g}"), progress=progress, **train_options)
        gens.append(r)
        prev = r.student
    from kdlab.evaluate.metrics import predict

    probs = torch.stack([predict(r.student, d.test).softmax(-1) for r in gens]).mean(0)
    last = gens[-1]
    first = 0 if teacher is None else 1
    last.extra.update(generations=[{"generation": i + first, "test_acc": r.test["acc"]} for i, r in enumerate(gens)],
                      ensemble_acc=float((probs.argmax(1) == d.test.y).double().mean()))
    return last


# ---------------------------------------------------------------- (c) snapshot self-distillation

class SnapshotDistiller(Distiller):
    """A Distiller with no teacher until epoch ``at_epoch``: before it the student trains on labels
    alone (CE at weight 1); at the start of epoch ``at_epoch`` a frozen copy of the student (its
    weights after ``at_epoch`` epochs) becomes the teacher of ``methods`` for the remaining epochs.
    """

    def __init__(self, student: nn.Module, methods: Sequence[Method], at_epoch: int) -> None:
        super().__init__(student, None, methods)
        self.at_epoch = at_epoch
        self.snapshot_epoch: int | None = None

    def _snapshot(self) -> FrozenTeacher:
        return FrozenTeacher(copy.deepcopy(self.student))

    def prepare(self, batch: Batch, info: DataInfo) -> None:
        self._teacher[0] = self._snapshot()  # the pair's shapes are the student's own
        try:
            super().prepare(batch, info)
        finally:
            self._teacher[0] = None

    def set_progress(self, epoch: int, epochs: int) -> None:
        super().set_progress(epoch, epochs)
        if epoch >= self.at_epoch and self.teacher is None:
            self._teacher[0] = self._snapshot()
            self.snapshot_epoch = epoch

    def forward(self, batch: Batch) -> tuple[Outputs, dict[str, Tensor]]:
        if self.teacher is not None:
            return super().forward(batch)
        s = as_outputs(self.student(batch.inputs))
        return s, ({} if batch.targets is None else {"ce": F.cross_entropy(s.logits, batch.targets)})


def snapshot_distill(model: str | nn.Module, data: str | DataSplits, *, epochs: int = 10, at_epoch: int | None = None,
                     method: str = "kd", alpha: float = 0.5, T: float = 4.0, seed: int = 0, out: str | None = None,
                     progress: bool = False, **train_options: Any) -> Result:
    """Train ``model`` on labels for ``at_epoch`` epochs (default half), then freeze a copy of it
    and distill that copy into the still-training model for the remaining epochs
    (``(1 − alpha)·CE + alpha·method``). ``Result.extra``: ``snapshot_epoch`` and the snapshot's
    test accuracy ``teacher_acc``."""
    if epochs < 2:
        raise ConfigError("snapshot self-distillation needs at least 2 epochs")
    at = epochs // 2 if at_epoch is None else at_epoch
    if not 1 <= at < epochs:
        raise ConfigError(f"at_epoch must be in 1..{epochs - 1}, got {at}")
    d = get_data(data, seed=seed)
    methods = [create_method("ce", weight=1 - alpha), logit_method(method, alpha, T)]
    sd = SnapshotDistiller(make_model(model, d, seed), methods, at)
    r = finish(sd, d, schedule(epochs, train_options), seed=seed, progress=progress, out=out, command="snapshot")
    assert sd.teacher is not None
    r.extra.update(snapshot_epoch=at, teacher_acc=evaluate(sd.teacher.module, d)["acc"], teacher=sd.teacher)
    return r
