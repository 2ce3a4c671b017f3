"""Online distillation: deep mutual learning (Zhang, Xiang, Hospedales, Lu; CVPR 2018).

N ≥ 2 peers (any architectures with the same classes) train together from scratch. Peer i minimises

    ce_weight · CE(p_i, y) + weight · T² · mean_{j≠i} KL(p_j ‖ p_i)

with the other peers' outputs detached, so each peer's loss moves only its own weights while
its targets come from the rest of the cohort. All peers take their step on the same batch at the
same time (the paper alternates peer updates within a batch; the simultaneous form is what most
reimplementations use and costs one forward per peer).
"""
from __future__ import annotations

from typing import Any, cast

import torch
from pydantic import Field
from torch import Tensor, nn

from kdlab.core import Batch, DataInfo, Outputs
from kdlab.engine.run import Result
from kdlab.errors import ConfigError, IncompatibleError
from kdlab.evaluate.metrics import evaluate_model
from kdlab.methods import create_method
from kdlab.methods._common import kl_div_soft
from kdlab.models.contract import as_outputs
from kdlab.schemes._common import SchemeContext, evaluate, model_name, register_scheme
from kdlab.spec import Spec


class MutualOptions(Spec):
    """``scheme:`` options of ``kdlab mutual``."""

    peers: list[str] = Field(["cnn_tiny", "cnn_small"], min_length=2)  # model names, any architectures
    T: float = Field(1.0, gt=0)  # temperature of the peers' KL terms
    weight: float = 1.0  # weight of each peer's distillation term
    ce_weight: float = 1.0  # weight of each peer's cross-entropy


class Cohort(nn.Module):
    """A trainable of N peers: ``forward(batch) -> (Outputs of the deployed peer, {term: loss})``.

    Terms are named per peer: ``ce/peer0``, ``dml/peer0``, ``ce/peer1`` … ``student`` is the peer
    to deploy: ``peers[best]``, the peer with the best validation accuracy so far. Each peer's best
    validation accuracy and weights are part of the module's state (``get_extra_state``), so a
    resumed run deploys exactly what an uninterrupted one would.
    """

    def __init__(self, peers: list[nn.Module], T: float = 1.0, weight: float = 1.0, ce_weight: float = 1.0) -> None:
        super().__init__()
        if len(peers) < 2:
            raise ConfigError(f"mutual learning needs at least 2 peers, got {len(peers)}")
        if T <= 0:
            raise ConfigError(f"temperature T must be > 0, got {T}")
        self.peers = nn.ModuleList(peers)
        self.T, self.weight = T, weight
        self.ce = create_method("ce", weight=ce_weight)
        self.best = 0
        self.best_val: list[float] = [-1.0] * len(peers)
        self.best_state: list[dict[str, Tensor] | None] = [None] * len(peers)

    @property
    def student(self) -> nn.Module:
        return self.peers[self.best]

    @torch.no_grad()
    def prepare(self, batch: Batch, info: DataInfo) -> None:
        was = self.training
        self.eval()
        classes = [as_outputs(p(batch.inputs)).logits.shape[-1] for p in self.peers]
        self.train(was)
        if len(set(classes)) != 1:
            raise IncompatibleError(f"peers predict different numbers of classes: {classes}")

    def set_progress(self, epoch: int, epochs: int) -> None:
        self.epoch, self.epochs = epoch, epochs

    def observe(self, val_accs: list[float]) -> None:
        """After an epoch: keep each peer's best weights; deploy the best peer."""
        for i, (m, acc) in enumerate(zip(self.peers, val_accs)):
            if acc > self.best_val[i]:
                self.best_val[i] = acc
                self.best_state[i] = {k: v.detach().clone() for k, v in m.state_dict().items()}
        self.best = max(range(len(self.peers)), key=lambda i: self.best_val[i])

    def get_extra_state(self) -> dict[str, Any]:
        return {"best": self.best, "best_val": list(self.best_val), "best_state": list(self.best_state)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.best, self.best_val, self.best_state = state["best"], list(state["best_val"]), list(state["best_state"])

    def forward(self, batch: Batch) -> tuple[Outputs, dict[str, Tensor]]:
        outs = [as_outputs(p(batch.inputs)) for p in self.peers]
        detached = [o.logits.detach() for o in outs]
        terms: dict[str, Tensor] = {}
        n = len(outs)
        for i, o in enumerate(outs):
            for k, v in self.ce(o, None, batch).items():
                terms[f"{k}/peer{i}"] = v
            kl = cast(Tensor, sum(kl_div_soft(o.logits, detached[j], self.T) for j in range(n) if j != i)) / (n - 1)
            terms[f"dml/peer{i}"] = self.weight * self.T * self.T * kl
        return outs[self.best], terms


@register_scheme("mutual", MutualOptions)
def mutual(ctx: SchemeContext, opts: MutualOptions) -> Result:
    """Train ``opts.peers`` together by deep mutual learning.

    Every epoch each peer is evaluated on validation and its best weights kept; the deployed
    student is the peer with the best validation accuracy, restored to its best epoch.
    ``Result.extra["peers"]`` lists each peer's model, best validation and test accuracy.
    """
    models = [ctx.model(p, ctx.seed * 1000 + i) for i, p in enumerate(opts.peers)]
    cohort = Cohort(models, T=opts.T, weight=opts.weight, ce_weight=opts.ce_weight)

    def on_epoch_end(epoch: int, rec: dict[str, Any]) -> None:
        accs = [evaluate_model(m, ctx.data.val, ctx.schedule.eval_batch_size)["acc"] for m in cohort.peers]
        rec.update({f"val_acc/peer{i}": a for i, a in enumerate(accs)})
        cohort.observe(accs)
        # the deployed peer's accuracy now: the loop's best epoch is then exactly the one where the
        # deployed peer reached its best, and its best checkpoint holds that peer's best weights
        rec["val_acc"] = accs[cohort.best]

    def extra() -> dict[str, Any]:
        rows = []
        for i, m in enumerate(cohort.peers):
            state = cohort.best_state[i]
            if state is not None:
                m.load_state_dict(state)
            rows.append({"model": model_name(opts.peers[i]), "val_acc": cohort.best_val[i],
                         "test_acc": evaluate(m, ctx.data)["acc"]})
        return {"peers": rows, "deployed": cohort.best}

    return ctx.run(cohort, on_epoch_end=on_epoch_end, extra=extra)
