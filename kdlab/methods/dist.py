"""DIST: match inter-class and intra-class Pearson relations of the predicted distributions."""
from __future__ import annotations

from torch import Tensor

from kdlab.core import Batch, Method, Outputs
from kdlab.methods import register_method
from kdlab.methods._logits import flatten_tokens
from kdlab.methods._logitstd import maybe_standardize


def pearson(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Row-wise Pearson correlation of ``[N, D]`` tensors: cosine of the mean-centred rows."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_terms(student_logits: Tensor, teacher_logits: Tensor, tau: float = 1.0) -> tuple[Tensor, Tensor]:
    """(inter-class, intra-class) DIST terms, each τ²-scaled. Logits ``[N, C]``.

    With Y = softmax(z/τ): inter = τ²·(1 − mean_i ρ(Y_s[i,:], Y_t[i,:])) (each sample's
    distribution over classes), intra = τ²·(1 − mean_j ρ(Y_s[:,j], Y_t[:,j])) (each class's
    scores across the batch); ρ is the Pearson correlation.
    """
    ys = (student_logits / tau).softmax(dim=1)
    yt = (teacher_logits / tau).softmax(dim=1)
    inter = 1 - pearson(ys, yt).mean()
    intra = 1 - pearson(ys.t(), yt.t()).mean()
    return tau * tau * inter, tau * tau * intra


def dist_loss(student_logits: Tensor, teacher_logits: Tensor, beta: float = 1.0, gamma: float = 1.0,
              tau: float = 1.0) -> Tensor:
    inter, intra = dist_terms(student_logits, teacher_logits, tau)
    return beta * inter + gamma * intra


@register_method("dist")
class DIST(Method):
    """Knowledge Distillation from A Stronger Teacher (Huang, You, Wang, Qian, Xu; NeurIPS 2022).

    loss = weight · (β · inter + γ · intra), see :func:`dist_terms`. Defaults are the authors'
    ImageNet setting (β=γ=τ=1, hunto/image_classification_sota); for CIFAR-100 the paper uses
    β=γ=2 and τ=4. The intra-class term correlates each class column across the batch, so it is
    batch-dependent (a batch of one sample gives it no signal). Token logits ``[B, L, V]`` are
    flattened over the student's mask (tokens then play the role of samples).
    ``logit_stand`` z-scores both sides' logits before τ.
    """

    def __init__(self, beta: float = 1.0, gamma: float = 1.0, tau: float = 1.0, weight: float = 1.0,
                 logit_stand: bool = False) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f"temperature tau must be > 0, got {tau}")
        self.beta, self.gamma, self.tau, self.weight, self.logit_stand = beta, gamma, tau, weight, logit_stand

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert teacher is not None
        s, t, _ = flatten_tokens(student, teacher)
        assert t is not None
        if s.shape[0] == 0:
            return {}
        s, t = maybe_standardize(s, t, self.logit_stand)
        assert t is not None
        inter, intra = dist_terms(s, t, self.tau)
        return {"dist_inter": self.weight * self.beta * inter, "dist_intra": self.weight * self.gamma * intra}
