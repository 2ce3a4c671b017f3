"""Classification metrics: top-1, macro precision/recall/F1, NLL, expected calibration error."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.core import Batch
from kdlab.models.contract import as_outputs


@torch.no_grad()
def predict(model: nn.Module, split, batch_size: int = 512) -> Tensor:
    """Logits ``[N, C]`` of ``model`` over a :class:`kdlab.data.Split` (eval mode, restored after)."""
    was = model.training
    model.eval()
    outs = []
    n = len(split)
    dev = next(model.parameters(), torch.empty(0)).device
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(start + batch_size, n))
        x = split.gather(idx)
        x = x if dev.type == "cpu" else Batch(x).to(dev).inputs  # a tensor or a dict of token tensors
        outs.append(as_outputs(model(x)).logits.float().cpu())
    model.train(was)
    return torch.cat(outs)


def classification_metrics(logits: Tensor, targets: Tensor, num_classes: int | None = None,
                           bins: int = 15) -> dict[str, float]:
    """logits ``[N, C]``, targets ``[N]`` → acc, precision/recall/f1 (macro), nll, ece."""
    C = num_classes or logits.shape[1]
    pred = logits.argmax(1)
    conf = torch.bincount(targets * C + pred, minlength=C * C).view(C, C).double()  # rows: true
    tp = conf.diag()
    support, predicted = conf.sum(1), conf.sum(0)
    present = support > 0  # macro averages over classes that occur in the targets
    prec = torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.zeros_like(tp))
    rec = tp / support.clamp_min(1)
    f1 = torch.where(prec + rec > 0, 2 * prec * rec / (prec + rec).clamp_min(1e-12), torch.zeros_like(tp))
    return {
        "acc": float((pred == targets).double().mean()),
        "precision": float(prec[present].mean()),
        "recall": float(rec[present].mean()),
        "f1": float(f1[present].mean()),
        "nll": float(F.cross_entropy(logits, targets)),
        "ece": expected_calibration_error(logits, targets, bins),
    }


def expected_calibration_error(logits: Tensor, targets: Tensor, bins: int = 15) -> float:
    """ECE with equal-width confidence bins (Guo et al., ICML 2017)."""
    probs = logits.softmax(1)
    conf, pred = probs.max(1)
    correct = (pred == targets).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=conf.dtype)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += float(m.double().mean() * (conf[m].double().mean() - correct[m].mean()).abs())
    return ece


def confusion_matrix(logits: Tensor, targets: Tensor, num_classes: int) -> Tensor:
    pred = logits.argmax(1)
    return torch.bincount(targets * num_classes + pred, minlength=num_classes**2).view(num_classes, num_classes)


def evaluate_model(model: nn.Module, split, batch_size: int = 512) -> dict[str, float]:
    logits = predict(model, split, batch_size)
    return classification_metrics(logits, split.y)
