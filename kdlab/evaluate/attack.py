"""White-box L∞ adversarial attacks for robustness evaluation: FGSM and PGD.

FGSM: Goodfellow et al., "Explaining and Harnessing Adversarial Examples" (ICLR 2015).
PGD: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks" (ICLR 2018):
random start in the ε-ball, ``steps`` signed-gradient steps of ``step_size``, each projected back
onto the ε-ball and the valid input range, ``restarts`` independent starts.

kdlab feeds models normalised inputs ``(pixel - mean) / std`` with pixels in [0, 1]; ε and the step
size are in pixel units. The attack therefore runs in pixel space, ``model((p - mean) / std)``, so
the ε-ball and the [0, 1] box are exact for every channel (an ε in normalised units would be
ε / std per channel).

Per sample, the returned input is the one with the highest cross-entropy among the clean input,
every iterate and every restart: an attack never returns an input the model handles better than
the clean one (a sign step can lower the loss of a sample near a kink). The gradient is the one of
the sum of per-sample losses, so every sample's step is its own.
"""
from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.errors import ConfigError
from kdlab.models.contract import as_outputs

ATTACKS = ("fgsm", "pgd")


LossFn = Callable[[Tensor, Tensor], Tensor]  # (logits [B, K], y [B]) -> per-sample loss [B]


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def _grad_sign(model: Callable[[Tensor], Tensor], p: Tensor, y: Tensor, loss_fn: LossFn) -> tuple[Tensor, Tensor]:
    """(sign of d loss / d p ``[B, ...]``, per-sample loss at p ``[B]``)."""
    with torch.enable_grad():
        p = p.detach().requires_grad_(True)
        loss = loss_fn(model(p), y)
        (g,) = torch.autograd.grad(loss.sum(), p)
    return g.sign(), loss.detach()


def _keep_worst(best: Tensor, best_loss: Tensor, cand: Tensor, cand_loss: Tensor) -> tuple[Tensor, Tensor]:
    better = cand_loss > best_loss
    mask = better.view(-1, *[1] * (cand.dim() - 1))
    return torch.where(mask, cand, best), torch.where(better, cand_loss, best_loss)


def attack_pixels(model: Callable[[Tensor], Tensor], p: Tensor, y: Tensor, *, kind: Literal["fgsm", "pgd"] = "pgd",
                  eps: float = 0.1, steps: int = 20, step_size: float | None = None, restarts: int = 1,
                  lo: float = 0.0, hi: float = 1.0, generator: torch.Generator | None = None,
                  loss_fn: LossFn = cross_entropy) -> Tensor:
    """Adversarial pixels ``[B, ...]`` for pixels ``p`` ``[B, ...]`` in [lo, hi] with labels ``y``
    ``[B]``; ``model(p) -> logits [B, K]``. Every output lies in the ε-ball around ``p`` and in
    [lo, hi]; per sample its loss is ≥ the clean loss (see the module docstring).

    fgsm: one step of size ε from the clean input (steps, step_size, restarts ignored).
    pgd: ``restarts`` × (uniform random start in the ε-ball, ``steps`` steps of ``step_size``,
    default 2.5 ε / steps as in Madry et al.).
    loss_fn: what the attack maximises (default cross-entropy with ``y``; adversarial distillation
    passes a divergence from the teacher's soft labels, with ``y`` the row ids).
    """
    if kind not in ATTACKS:
        raise ConfigError(f"unknown attack {kind!r} (attacks: {', '.join(ATTACKS)})")
    if eps < 0 or steps < 1 or restarts < 1:
        raise ConfigError(f"attack needs eps >= 0, steps >= 1 and restarts >= 1 (got {eps}, {steps}, {restarts})")
    p = p.detach()
    best = p.clone()
    with torch.no_grad():
        best_loss = loss_fn(model(p), y)
    if eps == 0:
        return best

    def project(q: Tensor) -> Tensor:
        return torch.clamp(torch.minimum(torch.maximum(q, p - eps), p + eps), lo, hi)

    if kind == "fgsm":
        s, _ = _grad_sign(model, p, y, loss_fn)
        adv = project(p + eps * s)
        with torch.no_grad():
            return _keep_worst(best, best_loss, adv, loss_fn(model(adv), y))[0]
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    for _ in range(restarts):
        u = torch.rand(p.shape, generator=generator, dtype=p.dtype, device=p.device) * 2 - 1
        q = project(p + eps * u)
        for _ in range(steps):
            s, loss = _grad_sign(model, q, y, loss_fn)
            best, best_loss = _keep_worst(best, best_loss, q, loss)
            q = project(q + alpha * s)
        with torch.no_grad():
            best, best_loss = _keep_worst(best, best_loss, q, loss_fn(model(q), y))
    return best


class PixelModel(nn.Module):
    """``model`` seen from pixel space: ``forward(p [B, C, H, W] in [0, 1]) -> logits [B, K]`` with
    ``p`` normalised by the per-channel ``mean``/``std`` the model was trained with."""

    mean: Tensor
    std: Tensor

    def __init__(self, model: nn.Module, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.model = model
        shape = (1, -1, 1, 1)
        self.register_buffer("mean", mean.reshape(shape).float())
        self.register_buffer("std", std.reshape(shape).float())

    def forward(self, p: Tensor) -> Tensor:
        return as_outputs(self.model((p - self.mean) / self.std)).logits

    def to_pixels(self, x: Tensor) -> Tensor:
        """Normalised inputs ``[B, C, H, W]`` back to pixels."""
        return x * self.std + self.mean


def robust_accuracy(model: nn.Module, x: Tensor, y: Tensor, mean: Tensor, std: Tensor, *,
                    kind: Literal["fgsm", "pgd"] = "pgd", eps: float = 0.1, steps: int = 20,
                    step_size: float | None = None, restarts: int = 1, batch_size: int = 256,
                    seed: int = 0) -> dict[str, float]:
    """Clean and adversarial top-1 of ``model`` (eval mode) on normalised images ``x`` ``[N, C, H, W]``
    with labels ``y`` ``[N]``; ``mean``/``std`` ``[C]`` map them to [0, 1] pixels, where ε lives."""
    if x.dim() != 4:
        raise ConfigError("adversarial attacks need image inputs [N, C, H, W] with pixels in [0, 1]; "
                          "this data holds vectors")
    was = model.training
    model.eval()
    net = PixelModel(model, mean, std)
    g = torch.Generator().manual_seed(seed)
    clean = adv = 0
    try:
        for i in range(0, len(x), batch_size):
            p = net.to_pixels(x[i:i + batch_size]).clamp(0, 1)  # float rounding of the normalisation
            t = y[i:i + batch_size]
            with torch.no_grad():
                clean += int((net(p).argmax(1) == t).sum())
            a = attack_pixels(net, p, t, kind=kind, eps=eps, steps=steps, step_size=step_size, restarts=restarts,
                              generator=g)
            with torch.no_grad():
                adv += int((net(a).argmax(1) == t).sum())
    finally:
        model.train(was)
    n = len(x)
    return {"clean_acc": clean / n, "adv_acc": adv / n, "eps": eps, "steps": 1 if kind == "fgsm" else steps,
            "restarts": 1 if kind == "fgsm" else restarts, "samples": n}
