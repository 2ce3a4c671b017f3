"""Several teachers answering as one: averaged, weighted, per-sample weighted, or one at random,
and optionally different kinds of knowledge from different teachers."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.core import Batch, Outputs, Teacher
from kdlab.errors import ConfigError, IncompatibleError
from kdlab.teachers.frozen import FrozenTeacher

MODES = ("mean", "weights", "confidence", "entropy", "random")


class EnsembleTeacher:
    """A Teacher combining ``teachers`` (Teachers or modules, which are frozen).

    mode — how the logit teachers' answers are weighted, per sample (weights sum to 1):

    * ``mean``: equal weights.
    * ``weights``: the fixed ``weights`` given (normalised to sum to 1).
    * ``confidence``: w_k(x) ∝ max_c p_k(c|x), the teacher's top-class probability.
    * ``entropy``: w_k(x) = softmax_k(−H(p_k(·|x)) / tau): lower entropy, more weight.
    * ``random``: one teacher per call (per training iteration), drawn with a seeded generator
      (from ``weights`` as probabilities when given, else uniformly).

    combine — ``logits``: weighted mean of logits (default); ``probs``: log of the weighted mean of
    probabilities (a proper mixture; its softmax is the mixture).

    logits_from / features_from — different knowledge from different teachers: the logits come
    from the teachers listed in ``logits_from`` (default all), the features from those in
    ``features_from`` (default: the first logit teacher), merged in order (a later teacher's
    feature replaces an earlier one of the same name). E.g. teachers ``[A, B]`` with
    ``logits_from=[0], features_from=[1]`` gives A's logits with B's features, for ``kd+fitnet``.

    ``last_weights`` holds the ``[B, K]`` weights of the latest call (K logit teachers).
    """

    def __init__(self, teachers: Sequence[Teacher | nn.Module], mode: str = "mean",
                 weights: Sequence[float] | None = None, combine: str = "logits", tau: float = 1.0,
                 logits_from: Sequence[int] | None = None, features_from: Sequence[int] | int | None = None,
                 seed: int = 0) -> None:
        if not teachers:
            raise ConfigError("an ensemble needs at least one teacher")
        if mode not in MODES:
            raise ConfigError(f"unknown ensemble mode {mode!r} ({', '.join(MODES)})")
        if combine not in ("logits", "probs"):
            raise ConfigError(f"combine must be 'logits' or 'probs', got {combine!r}")
        if tau <= 0:
            raise ConfigError(f"tau must be > 0, got {tau}")
        self.teachers: list[Teacher] = [FrozenTeacher(t) if isinstance(t, nn.Module) else t for t in teachers]
        n = len(self.teachers)
        self.logits_from = list(range(n)) if logits_from is None else [int(i) for i in logits_from]
        if isinstance(features_from, int):
            features_from = [features_from]
        self.features_from = [self.logits_from[0]] if features_from is None else [int(i) for i in features_from]
        for i in [*self.logits_from, *self.features_from]:
            if not 0 <= i < n:
                raise ConfigError(f"teacher index {i} out of range (0..{n - 1})")
        if not self.logits_from:
            raise ConfigError("logits_from is empty: at least one teacher must give logits")
        if mode == "weights" and weights is None:
            raise ConfigError("mode 'weights' needs weights")
        w = None
        if weights is not None:
            if len(weights) != len(self.logits_from):
                raise ConfigError(f"{len(weights)} weights for {len(self.logits_from)} logit teachers")
            if any(x < 0 for x in weights) or sum(weights) <= 0:
                raise ConfigError(f"weights must be >= 0 with a positive sum, got {list(weights)}")
            w = torch.tensor([float(x) for x in weights])
            w = w / w.sum()
        self.mode, self.fixed, self.combine, self.tau = mode, w, combine, tau
        self.generator = torch.Generator().manual_seed(seed)
        self.last_weights: Tensor | None = None
        self.last_choice: int | None = None

    def weights_for(self, logits: Sequence[Tensor]) -> Tensor:
        """Per-sample weights ``[B, K]`` (rows sum to 1) for the K logit teachers' ``[B, C]`` logits."""
        z = torch.stack([l.float() for l in logits], 1)  # [B, K, C]
        B, K = z.shape[:2]
        if self.mode == "mean":
            return z.new_full((B, K), 1.0 / K)
        if self.mode == "weights":
            assert self.fixed is not None
            return self.fixed.to(z.device).expand(B, K).clone()
        if self.mode == "random":
            k = self.draw()
            return F.one_hot(torch.full((B,), k, dtype=torch.long, device=z.device), K).to(z)
        p = z.softmax(-1)
        if self.mode == "confidence":
            conf = p.amax(-1)
            return conf / conf.sum(1, keepdim=True)
        ent = -(p * p.clamp_min(1e-12).log()).sum(-1)  # [B, K]
        return (-ent / self.tau).softmax(1)

    @property
    def train_split_only(self) -> bool:
        """True when a member answers only for training-split ids (e.g. a file teacher)."""
        return any(getattr(t, "train_split_only", False) for t in self.teachers)

    def draw(self) -> int:
        """Position (in ``logits_from``) of a randomly drawn teacher, for mode ``random``."""
        K = len(self.logits_from)
        p = self.fixed if self.fixed is not None else torch.full((K,), 1.0 / K)
        self.last_choice = int(torch.multinomial(p, 1, generator=self.generator))
        return self.last_choice

    def __call__(self, batch: Batch) -> Outputs:
        if self.mode == "random":  # only the drawn teacher (and the feature teachers) run
            k = self.draw()
            src = self.logits_from[k]
            outs = {i: self.teachers[i](batch) for i in sorted({src, *self.features_from})}
            z = outs[src].logits
            self.last_weights = F.one_hot(torch.full((z.shape[0],), k, dtype=torch.long, device=z.device),
                                          len(self.logits_from)).float()
            feats: dict[str, Tensor] = {key: v for i in self.features_from for key, v in outs[i].features.items()}
            return Outputs(z, feats, outs[src].mask)
        outs = {i: self.teachers[i](batch) for i in sorted(set(self.logits_from) | set(self.features_from))}
        logits = [outs[i].logits for i in self.logits_from]
        shapes = {tuple(l.shape) for l in logits}
        if len(shapes) != 1:
            raise IncompatibleError(f"ensemble teachers disagree on the logits' shape: {sorted(shapes)}")
        w = self.weights_for(logits)
        self.last_weights = w
        z = torch.stack([l.float() for l in logits], 1)  # [B, K, C]
        wb = w.unsqueeze(-1)
        if self.combine == "logits":
            merged = (wb * z).sum(1)
        else:
            merged = torch.logsumexp(z.log_softmax(-1) + wb.clamp_min(1e-30).log(), dim=1)
        feats = {}
        for i in self.features_from:
            feats.update(outs[i].features)
        return Outputs(merged.to(logits[0].dtype), feats, outs[self.logits_from[0]].mask)

    def to(self, device: torch.device | str) -> "EnsembleTeacher":
        for t in self.teachers:
            if hasattr(t, "to"):
                t.to(device)
        return self

    def __repr__(self) -> str:
        return f"EnsembleTeacher({len(self.teachers)} teachers, mode={self.mode!r}, combine={self.combine!r})"

