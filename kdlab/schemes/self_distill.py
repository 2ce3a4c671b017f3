"""Self-distillation: a network teaches itself, no separately trained teacher.

One scheme, ``self-distill``, with three kinds (``scheme.kind``):

* ``byot`` — Be Your Own Teacher (Zhang, Song, Gao, Chen, Bao, Ma; ICCV 2019): auxiliary
  classifiers on the shallower stages learn from the deepest classifier (KD on logits) and from
  its last feature map (L2 hint), which also trains the shallow layers harder
  (:class:`SelfDistiller`). One run: ``<out>/`` holds the model (its exits are not part of the
  checkpoint); ``extra["exits"]`` has the test accuracy of every exit, of the final classifier
  and of the ensemble of all exits, with the exits of the deployed (best-on-validation) epoch.
* ``born-again`` — Born-Again Networks (Furlanello, Lipton, Tschannen, Itti, Anandkumar;
  ICML 2018): generation k+1 (same architecture, fresh weights) is distilled from generation k.
  Generation 0 learns from labels (or is ``scheme.teacher``, given). Every generation but the
  last is a stage, ``<out>/gen0/``, ``<out>/gen1/``, ...; the last one, generation
  ``scheme.generations``, is the deployed student and lives in ``<out>/`` itself, whose
  ``extra`` lists every generation's test accuracy and the accuracy of the ensemble of all
  generations (averaged probabilities).
* ``snapshot`` — for the last epochs the student is supervised by a frozen copy of itself taken
  at an earlier epoch (:class:`SnapshotDistiller`). One run: ``<out>/``; ``extra`` has the
  snapshot epoch and the snapshot's test accuracy.

    kdlab.scheme("self-distill", "digits", epochs=5, kind="snapshot", at_epoch=2)
    kdlab self-distill --kind born-again --generations 2 --model cnn_tiny --data digits

What must survive a resume lives in the trainables' state (``get_extra_state``): the exits of the
best epoch for ``byot``, the snapshot teacher's weights for ``snapshot``.
"""
from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any, Callable, Literal, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from kdlab.core import Batch, DataInfo, Method, Outputs, Teacher
from kdlab.data import Split
from kdlab.engine.distiller import Distiller
from kdlab.engine.run import Result
from kdlab.errors import ConfigError, IncompatibleError
from kdlab.evaluate.metrics import classification_metrics, evaluate_model, predict
from kdlab.methods import hyperparameters
from kdlab.methods._common import kl_div_soft
from kdlab.methods._connectors import stage_keys
from kdlab.models.contract import as_outputs
from kdlab.objective import DEFAULT_METHOD, family
from kdlab.schemes._common import SchemeContext, create_methods, evaluate, objective, register_scheme
from kdlab.spec import Spec
from kdlab.teachers.frozen import FrozenTeacher

Kind = Literal["byot", "born-again", "snapshot"]
# alpha and T when the options leave them unset (null)
DEFAULTS: dict[str, tuple[float, float]] = {"byot": (0.3, 3.0), "born-again": (0.9, 4.0), "snapshot": (0.5, 4.0)}


class SelfDistillOptions(Spec):
    """``scheme:`` options of ``kdlab self-distill``; each kind reads its own (see the comments)."""

    kind: Kind = "byot"  # byot (auxiliary exits) | born-again (generations) | snapshot (a frozen copy teaches)
    model: str = "cnn_small"  # the model name (every generation of born-again starts from fresh weights)
    alpha: float | None = Field(None, ge=0, le=1)  # KD weight; null: byot 0.3, born-again 0.9, snapshot 0.5
    T: float | None = Field(None, gt=0)  # temperature; null: byot 3, born-again and snapshot 4
    hint: float = Field(0.03, ge=0)  # byot: weight of each exit's L2 hint to the deepest feature map
    generations: int = Field(2, ge=1)  # born-again: generations after the first
    teacher: str | None = None  # born-again: generation 0 from this checkpoint (null: trained here)
    method: str | list[str | dict[str, Any]] = DEFAULT_METHOD  # born-again, snapshot: distillation method(s)
    at_epoch: int | None = Field(None, ge=1)  # snapshot: epochs before the snapshot (null: half)

    def alpha_T(self) -> tuple[float, float]:
        """alpha and T of this kind: the options', or the kind's defaults where unset."""
        a, t = DEFAULTS[self.kind]
        return (a if self.alpha is None else self.alpha), (t if self.T is None else self.T)

    def objective(self) -> tuple[list[dict[str, Any]], float | None, float | None]:
        """born-again, snapshot: the methods list, and the alpha and T it was built with. The
        kind's default alpha and T apply only where the methods can take them (a feature method
        alone keeps its paper weights); given ones always apply (or are refused, naming why)."""
        alpha, T = self.alpha_T()
        logit = [m["name"] for m in objective(self.method, None, None)[1:] if family(m["name"]) == "response"]
        a = alpha if self.alpha is not None or logit else None
        t = T if self.T is not None or any("T" in hyperparameters(n) for n in logit) else None
        return objective(self.method, a, t), a, t


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
            self.bottleneck = nn.Sequential(nn.Linear(shallow[1], deep[1]), nn.BatchNorm1d(deep[1]),
                                            nn.ReLU(inplace=True))
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

    :meth:`observe` (after every epoch, with its validation accuracy) keeps the heads of the best
    epoch, so they pair with the deployed student; they are part of the module's state
    (``get_extra_state``). ``validate(model) -> val acc`` fills the one observation a resumed run
    misses (the training state of an epoch is saved before it is observed).

    The paper gives no loss weights; the defaults (alpha 0.3, T 3, hint 0.03) are this
    implementation's choice.
    """

    def __init__(self, model: nn.Module, T: float = 3.0, alpha: float = 0.3, hint: float = 0.03,
                 validate: Callable[[nn.Module], float] | None = None) -> None:
        super().__init__()
        if T <= 0 or not 0 <= alpha <= 1:
            raise ConfigError(f"need T > 0 and alpha in [0, 1], got T={T}, alpha={alpha}")
        self.student = model
        self.T, self.alpha, self.hint = T, alpha, hint
        self.heads = nn.ModuleDict()
        self.deep_key = ""
        self.validate = validate
        self.observed = -1  # the last epoch observed (0-based)
        self.best_val = -1.0
        self.best_epoch: int | None = None
        self.best_heads: dict[str, Tensor] | None = None

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

    def set_progress(self, epoch: int, epochs: int) -> None:
        if self.validate is not None and self.observed < epoch - 1:  # resumed: the student is epoch-1's
            self.observe(epoch - 1, self.validate(self.student))

    def observe(self, epoch: int, val_acc: float) -> None:
        """After an epoch: keep the heads if its student is the best so far (the loop's rule)."""
        if val_acc > self.best_val:
            self.best_val, self.best_epoch = val_acc, epoch
            self.best_heads = {k: v.detach().clone() for k, v in self.heads.state_dict().items()}
        self.observed = epoch

    def restore_best_heads(self, last_epoch: int) -> None:
        """With ``student`` holding the deployed (best-epoch) weights: load that epoch's heads."""
        if self.validate is not None and self.observed < last_epoch:
            # killed after the last epoch was saved but before it was observed: it is the best
            # epoch exactly when the deployed student beats every observed one
            if self.validate(self.student) > self.best_val:
                self.best_epoch, self.best_heads = last_epoch, None  # the current heads are its own
            self.observed = last_epoch
        if self.best_heads is not None:
            self.heads.load_state_dict(self.best_heads)

    def get_extra_state(self) -> dict[str, Any]:
        return {"observed": self.observed, "best_val": self.best_val, "best_epoch": self.best_epoch,
                "best_heads": self.best_heads}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.observed, self.best_val = int(state["observed"]), float(state["best_val"])
        self.best_epoch, self.best_heads = state["best_epoch"], state["best_heads"]

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


def _byot(ctx: SchemeContext, opts: SelfDistillOptions) -> Result:
    """Train the model with auxiliary exits distilled from its deepest classifier."""
    alpha, T = opts.alpha_T()
    d = ctx.data

    def validate(m: nn.Module) -> float:  # what the loop measures after every epoch
        return float(evaluate_model(m, d.val, ctx.schedule.eval_batch_size)["acc"])

    sd = SelfDistiller(ctx.model(opts.model), T=T, alpha=alpha, hint=opts.hint, validate=validate)

    def on_epoch_end(epoch: int, rec: dict[str, Any]) -> None:
        sd.observe(epoch, rec["val_acc"])

    def extra() -> dict[str, Any]:
        sd.restore_best_heads(ctx.schedule.epochs - 1)
        logits = sd.exit_logits(d.test, ctx.schedule.eval_batch_size)
        assert d.test.y is not None
        exits = {k: classification_metrics(v, d.test.y, d.num_classes)["acc"] for k, v in logits.items()}
        ens = torch.stack([v.softmax(-1) for v in logits.values()]).mean(0)
        exits["ensemble"] = float((ens.argmax(1) == d.test.y).double().mean())
        return {"kind": "byot", "alpha": alpha, "T": T, "exits": exits}

    return ctx.run(sd, on_epoch_end=on_epoch_end, extra=extra)


# ---------------------------------------------------------------- (b) born-again generations

def _reseeded(ctx: SchemeContext, seed: int) -> SchemeContext:
    """The context with another training seed (batch order): each generation has its own."""
    return replace(ctx, opts=replace(ctx.opts, seed=seed))


def _born_again(ctx: SchemeContext, opts: SelfDistillOptions) -> Result:
    """Generation 0 learns from labels (or is ``opts.teacher``); generation g (seed + g, weights and
    batch order) is distilled from generation g − 1; the last generation is deployed."""
    methods, alpha, T = opts.objective()
    gens: list[tuple[int, nn.Module, float]] = []  # (generation, best student, test acc) of the stages
    prev: Teacher
    if opts.teacher is None:
        r0 = ctx.train(opts.model, "gen0")
        gens.append((0, r0.student, r0.test["acc"]))
        prev = ctx.teacher(r0.student)
    else:
        prev = ctx.teacher(opts.teacher)
    last = opts.generations
    for g in range(1, last):
        seed = ctx.seed + g
        r = _reseeded(ctx, seed).run(Distiller(ctx.model(opts.model, seed), prev, create_methods(methods)),
                                     f"gen{g}", report_teacher=prev)
        gens.append((g, r.student, r.test["acc"]))
        prev = ctx.teacher(r.student)
    seed = ctx.seed + last
    trainable = Distiller(ctx.model(opts.model, seed), prev, create_methods(methods))

    def extra() -> dict[str, Any]:
        student = trainable.student  # best weights of the last generation
        members = [*gens, (last, student, evaluate(student, ctx.data)["acc"])]
        probs = torch.stack([predict(m, ctx.data.test).softmax(-1) for _, m, _ in members]).mean(0)
        assert ctx.data.test.y is not None
        return {"kind": "born-again", "alpha": alpha, "T": T,
                "generations": [{"generation": g, "test_acc": acc} for g, _, acc in members],
                "ensemble_acc": float((probs.argmax(1) == ctx.data.test.y).double().mean())}

    return _reseeded(ctx, seed).run(trainable, extra=extra, report_teacher=prev)


# ---------------------------------------------------------------- (c) snapshot self-distillation

class SnapshotDistiller(Distiller):
    """A Distiller with no teacher until epoch ``at_epoch``: before it the student trains on labels
    alone (CE at weight 1); at the start of epoch ``at_epoch`` a frozen copy of the student (its
    weights after ``at_epoch`` epochs) becomes the teacher of ``methods`` for the remaining epochs
    (swapped in with :meth:`Distiller.set_teacher`). The snapshot's weights are part of the
    module's state (``get_extra_state``), so a run resumed after the snapshot epoch keeps it.
    """

    def __init__(self, student: nn.Module, methods: Sequence[Method], at_epoch: int) -> None:
        super().__init__(student, None, methods)
        self.at_epoch = at_epoch
        self.snapshot_epoch: int | None = None
        self.snapshot: FrozenTeacher | None = None

    def _copy(self) -> FrozenTeacher:
        return FrozenTeacher(copy.deepcopy(self.student))

    def prepare(self, batch: Batch, info: DataInfo) -> None:
        # the pair's shapes are the student's own
        self.set_teacher(self.snapshot if self.snapshot is not None else self._copy())
        try:
            super().prepare(batch, info)
        finally:
            self.set_teacher(self.snapshot)

    def set_progress(self, epoch: int, epochs: int) -> None:
        super().set_progress(epoch, epochs)
        if epoch >= self.at_epoch and self.snapshot is None:
            self._take(self._copy(), epoch)

    def _take(self, snapshot: FrozenTeacher | None, epoch: int | None) -> None:
        self.snapshot, self.snapshot_epoch = snapshot, epoch
        self.set_teacher(snapshot)

    def get_extra_state(self) -> dict[str, Any]:
        weights = None if self.snapshot is None else dict(self.snapshot.module.state_dict())
        return {"snapshot_epoch": self.snapshot_epoch, "snapshot": weights}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if state["snapshot"] is None:
            self._take(None, None)
            return
        module = copy.deepcopy(self.student)
        module.load_state_dict(state["snapshot"])
        self._take(FrozenTeacher(module), state["snapshot_epoch"])

    def forward(self, batch: Batch) -> tuple[Outputs, dict[str, Tensor]]:
        if self.teacher is not None:
            return super().forward(batch)
        s = as_outputs(self.student(batch.inputs))
        return s, ({} if batch.targets is None else {"ce": F.cross_entropy(s.logits, batch.targets)})


def _snapshot(ctx: SchemeContext, opts: SelfDistillOptions) -> Result:
    """Train on labels for ``at_epoch`` epochs (default half), then distill a frozen copy of the
    model into the still-training model for the remaining epochs (``(1 − alpha)·CE + alpha·method``)."""
    epochs = ctx.schedule.epochs
    if epochs < 2:
        raise ConfigError("snapshot self-distillation needs at least 2 epochs (train.epochs)")
    at = epochs // 2 if opts.at_epoch is None else opts.at_epoch
    if not 1 <= at < epochs:
        raise ConfigError(f"scheme.at_epoch must be in 1..{epochs - 1} (train.epochs is {epochs}), got {at}")
    methods, alpha, T = opts.objective()
    sd = SnapshotDistiller(ctx.model(opts.model), create_methods(methods), at)

    def extra() -> dict[str, Any]:
        assert sd.snapshot is not None
        return {"kind": "snapshot", "alpha": alpha, "T": T, "snapshot_epoch": sd.snapshot_epoch,
                "teacher_acc": evaluate(sd.snapshot.module, ctx.data)["acc"]}

    return ctx.run(sd, extra=extra)


# ---------------------------------------------------------------- the scheme

KINDS: dict[str, Callable[[SchemeContext, SelfDistillOptions], Result]] = {
    "byot": _byot, "born-again": _born_again, "snapshot": _snapshot}


@register_scheme("self-distill", SelfDistillOptions)
def self_distill(ctx: SchemeContext, opts: SelfDistillOptions) -> Result:
    """Self-distillation of ``opts.model`` by ``opts.kind`` (see the module docstring)."""
    return KINDS[opts.kind](ctx, opts)
