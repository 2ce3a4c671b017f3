"""Online distillation: deep mutual learning (Zhang, Xiang, Hospedales, Lu; CVPR 2018).

N ≥ 2 peers (any architectures with the same classes) train together from scratch. Peer i minimises

    ce_weight · CE(p_i, y) + weight · T² · mean_{j≠i} KL(p_j ‖ p_i)

with the other peers' outputs detached, so each peer's loss moves only its own weights while
its targets come from the rest of the cohort. All peers take their step on the same batch at the
same time (the paper alternates peer updates within a batch; the simultaneous form is what most
reimplementations use and costs one forward per peer).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from kdlab.api import Result, evaluate, get_data
from kdlab.core import Batch, DataInfo, Outputs
from kdlab.data import DataSplits
from kdlab.errors import ConfigError, IncompatibleError
from kdlab.evaluate.metrics import evaluate_model
from kdlab.methods import create_method
from kdlab.methods._common import kl_div_soft
from kdlab.models.contract import as_outputs
from kdlab.schemes._common import finish, make_model, model_name, schedule


class Cohort(nn.Module):
    """A trainable of N peers: ``forward(batch) -> (Outputs of the deployed peer, {term: loss})``.

    Terms are named per peer: ``ce/peer0``, ``dml/peer0``, ``ce/peer1`` … ``student`` is the peer
    to deploy: ``peers[best]``, where ``best`` is updated from validation accuracy by
    :func:`mutual` at the end of each epoch (peer 0 until then).
    """

    def __init__(self, peers: Sequence[nn.Module], T: float = 1.0, weight: float = 1.0, ce_weight: float = 1.0) -> None:
        super().__init__()
        if len(peers) < 2:
            raise ConfigError(f"mutual learning needs at least 2 peers, got {len(peers)}")
        if T <= 0:
            raise ConfigError(f"temperature T must be > 0, got {T}")
        self.peers = nn.ModuleList(peers)
        self.T, self.weight = T, weight
        self.ce = create_method("ce", weight=ce_weight)
        self.best = 0

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

    def forward(self, batch: Batch) -> tuple[Outputs, dict[str, Tensor]]:
        outs = [as_outputs(p(batch.inputs)) for p in self.peers]
        detached = [o.logits.detach() for o in outs]
        terms: dict[str, Tensor] = {}
        n = len(outs)
        for i, o in enumerate(outs):
            for k, v in self.ce(o, None, batch).items():
                terms[f"{k}/peer{i}"] = v
            kl = sum(kl_div_soft(o.logits, detached[j], self.T) for j in range(n) if j != i) / (n - 1)
            terms[f"dml/peer{i}"] = self.weight * self.T * self.T * kl
        return outs[self.best], terms


def mutual(peers: Sequence[str | nn.Module], data: str | DataSplits, *, epochs: int = 10, T: float = 1.0,
           weight: float = 1.0, ce_weight: float = 1.0, seed: int = 0, out: str | None = None,
           progress: bool = False, **train_options: Any) -> Result:
    """Train ``peers`` (model names or modules) together by deep mutual learning.

    Every epoch each peer is evaluated on validation and its best weights kept; the returned
    ``Result.student`` is the peer with the best validation accuracy, restored to its best epoch.
    ``Result.extra["peers"]`` lists each peer's model, best validation and test accuracy.

        r = mutual(["cnn_tiny", "cnn_small"], "digits", epochs=5)
        r.extra["peers"]   # [{"model": "cnn_tiny", "val_acc": …, "test_acc": …}, …]
    """
    d = get_data(data, seed=seed)
    sched = schedule(epochs, train_options)
    models = [make_model(p, d, seed * 1000 + i) for i, p in enumerate(peers)]
    cohort = Cohort(models, T=T, weight=weight, ce_weight=ce_weight)
    best_val = [-1.0] * len(models)
    best_state: list[dict[str, Tensor] | None] = [None] * len(models)

    def on_epoch_end(epoch: int, rec: dict[str, Any]) -> None:
        for i, m in enumerate(cohort.peers):
            acc = evaluate_model(m, d.val, sched.eval_batch_size)["acc"]
            rec[f"val_acc/peer{i}"] = acc
            if acc > best_val[i]:
                best_val[i] = acc
                best_state[i] = {k: v.detach().clone() for k, v in m.state_dict().items()}
        cohort.best = max(range(len(models)), key=lambda i: best_val[i])

    r = finish(cohort, d, sched, seed=seed, progress=progress, out=out, use_best=False,
               on_epoch_end=on_epoch_end, command="mutual")
    rows = []
    for i, m in enumerate(cohort.peers):
        if best_state[i] is not None:
            m.load_state_dict(best_state[i])
        rows.append({"model": model_name(peers[i]), "val_acc": best_val[i], "test_acc": evaluate(m, d)["acc"]})
    student = cohort.student.eval()
    r.student, r.test, r.best_val_acc = student, evaluate(student, d), best_val[cohort.best]
    r.extra.update(peers=rows, deployed=cohort.best)
    return r
