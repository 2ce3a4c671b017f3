"""Contrastive representation distillation: NCE between student and teacher embeddings with a memory of negatives."""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.core import Batch, DataInfo, Method, Outputs
from kdlab.errors import IncompatibleError
from kdlab.methods import register_method

EPS = 1e-7


def nce_loss(probs: Tensor, n_data: int, eps: float = EPS) -> Tensor:
    """NCE loss of Tian et al. (Eq. 18 of the CRD paper) for one anchor view.

    probs ``[B, K+1]``: the un-normalised model probabilities exp(v·m/τ)/Z of the positive
    (column 0) and K negatives. With noise probability P_n = 1/N and m = K:
    loss = −(Σ_b log(P_pos / (P_pos + m·P_n)) + Σ_{b,k} log(m·P_n / (P_neg + m·P_n))) / B.
    """
    b, k1 = probs.shape
    mpn = (k1 - 1) / float(n_data)
    log_d1 = torch.log(probs[:, 0] / (probs[:, 0] + mpn + eps))
    log_d0 = torch.log(mpn / (probs[:, 1:] + mpn + eps))
    return -(log_d1.sum() + log_d0.sum()) / b


@register_method("crd")
class CRD(Method):
    """Contrastive Representation Distillation (Tian, Krishnan, Isola; ICLR 2020).

    Both ``pooled`` embeddings go through a learnable Linear head to ``feat_dim`` and are
    L2-normalised (e_s, e_t). Each sample's positive is itself on the other side; negatives come
    from a memory: loss = weight · (NCE(e_s vs teacher memory) + NCE(e_t vs student memory)), with
    P(i|v) = exp(v·m_i/τ)/Z and Z set once from the first batch (mean × N), as in RepDistiller.

    Memory (default): a bank of ``info.num_train`` rows per side, indexed by ``batch.index``
    (required), updated with momentum after each training step (m_i ← norm(μ·m_i + (1−μ)·e_i);
    written at the start of the next forward, see :meth:`flush_updates`).
    ``nce_k`` negatives per sample are drawn uniformly from the bank excluding the sample itself
    (clipped to num_train − 1); RepDistiller's CIFAR loader instead draws them from other classes
    only ("exact" mode). Bank memory is 2·N·feat_dim floats and scores cost B·N per step.
    ``queue_size``: instead a bounded MoCo-style FIFO queue of the last ``queue_size`` teacher and
    student embeddings serves as the negatives (no ``batch.index`` needed, memory independent of
    N); the positive is then the other side's current embedding (detached), and the noise
    probability stays 1/num_train. Memories are buffers (saved with the trainable state) and are
    not synchronised across data-parallel ranks.

    Defaults (RepDistiller / mdistiller CIFAR-100): feat_dim=128, nce_k=16384, τ=0.07, μ=0.5,
    weight 0.8 (with ``ce`` at 1.0).
    """

    needs = frozenset({"pooled"})
    family = "relation"

    # buffers registered by prepare: the bank (memory_*) or the queue (queue_*), and Z per side
    memory_s: Tensor
    memory_t: Tensor
    queue_s: Tensor
    queue_t: Tensor
    queue_ptr: Tensor
    z_s: Tensor
    z_t: Tensor

    def __init__(self, feat_dim: int = 128, nce_k: int = 16384, nce_t: float = 0.07, nce_m: float = 0.5,
                 queue_size: int | None = None, weight: float = 0.8) -> None:
        super().__init__()
        if feat_dim < 1 or nce_k < 1 or nce_t <= 0 or not 0.0 <= nce_m < 1.0:
            raise ValueError(f"need feat_dim >= 1, nce_k >= 1, nce_t > 0, 0 <= nce_m < 1; got "
                             f"{feat_dim}, {nce_k}, {nce_t}, {nce_m}")
        if queue_size is not None and queue_size < 1:
            raise ValueError(f"queue_size must be >= 1 or None, got {queue_size}")
        self.feat_dim, self.nce_k, self.nce_t, self.nce_m = feat_dim, nce_k, nce_t, nce_m
        self.queue_size, self.weight = queue_size, weight
        self.embed_s: nn.Module | None = None
        self.embed_t: nn.Module | None = None
        self.n_data = 0
        self.k = 0
        self._pending: tuple[Tensor, Tensor, Tensor | None] | None = None

    # ------------------------------------------------------------------ setup
    def prepare(self, student: Outputs, teacher: Outputs | None, info: DataInfo) -> None:
        super().prepare(student, teacher, info)
        assert teacher is not None
        s, t = student.features["pooled"], teacher.features["pooled"]
        dev, dt = s.device, torch.float32
        self.embed_s = nn.Linear(s[0].numel(), self.feat_dim).to(device=dev, dtype=s.dtype)
        self.embed_t = nn.Linear(t[0].numel(), self.feat_dim).to(device=dev, dtype=s.dtype)
        self.n_data = int(info.num_train)
        self._pending = None
        if self.queue_size is None:
            if self.n_data < 2:
                raise IncompatibleError(f"CRD's memory bank needs at least 2 training samples, "
                                        f"got num_train={self.n_data}")
            self.k = min(self.nce_k, self.n_data - 1)
            stdv = 1.0 / math.sqrt(self.feat_dim / 3)
            for name in ("memory_s", "memory_t"):
                bank = torch.rand(self.n_data, self.feat_dim, device=dev, dtype=dt) * 2 * stdv - stdv
                self.register_buffer(name, bank)
        else:
            self.n_data = max(self.n_data, 1)
            self.k = self.queue_size
            for name in ("queue_s", "queue_t"):
                queue = F.normalize(torch.randn(self.queue_size, self.feat_dim, device=dev, dtype=dt), dim=1)
                self.register_buffer(name, queue)
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long, device=dev))
        self.register_buffer("z_s", torch.tensor(-1.0, device=dev))
        self.register_buffer("z_t", torch.tensor(-1.0, device=dev))

    # ------------------------------------------------------------------ pieces
    def embed(self, student_pooled: Tensor, teacher_pooled: Tensor) -> tuple[Tensor, Tensor]:
        """L2-normalised student and teacher embeddings ``[B, feat_dim]``."""
        assert self.embed_s is not None and self.embed_t is not None
        es = F.normalize(self.embed_s(student_pooled.flatten(1)), dim=1)
        et = F.normalize(self.embed_t(teacher_pooled.flatten(1).to(student_pooled.dtype)), dim=1)
        return es, et

    def _negatives(self, index: Tensor) -> Tensor:
        """``[B, K]`` uniform draws from the bank, never the sample's own row."""
        r = torch.randint(0, self.n_data - 1, (index.shape[0], self.k), device=index.device)
        return r + (r >= index.view(-1, 1)).long()

    def _z(self, name: str, probs: Tensor) -> Tensor:
        """The normalisation constant, fixed from the first batch it sees (without a host sync)."""
        z = getattr(self, name)
        with torch.no_grad():
            z.copy_(torch.where(z < 0, probs.detach().mean() * self.n_data, z))
        return z

    def _bank_scores(self, es: Tensor, et: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        cand = torch.cat([index.view(-1, 1), self._negatives(index)], dim=1)  # [B, K+1]
        # all bank rows then a gather: B·N scores instead of a [B, K+1, D] copy of the bank
        dt = self.memory_t.dtype  # float32 unless changed: exp(1/τ) overflows half precision
        s_all = es.to(dt) @ self.memory_t.t()  # student anchor vs teacher memory
        t_all = et.to(dt) @ self.memory_s.t()  # teacher anchor vs student memory
        return s_all.gather(1, cand), t_all.gather(1, cand)

    def _queue_scores(self, es: Tensor, et: Tensor) -> tuple[Tensor, Tensor]:
        es, et = es.to(self.queue_t.dtype), et.to(self.queue_t.dtype)
        pos = (es * et.detach()).sum(1, keepdim=True)
        pos_t = (et * es.detach()).sum(1, keepdim=True)
        return torch.cat([pos, es @ self.queue_t.t()], 1), torch.cat([pos_t, et @ self.queue_s.t()], 1)

    @torch.no_grad()
    def flush_updates(self) -> None:
        """Write the last training step's embeddings into the memory.

        The write is deferred to the next forward (or checkpoint / epoch start): the current
        step's graph still holds the memory for its backward pass, so updating it in place right
        away would invalidate that graph (copying the bank every step instead would cost O(N·D)).
        """
        if self._pending is None:
            return
        es, et, index = self._pending
        self._pending = None
        if self.queue_size is None:
            assert index is not None
            for mem, v in ((self.memory_s, es), (self.memory_t, et)):
                new = F.normalize(mem[index] * self.nce_m + v.to(mem.dtype) * (1 - self.nce_m), dim=1)
                mem.index_copy_(0, index, new)
        else:
            n, size = es.shape[0], self.queue_size
            if n > size:
                es, et, n = es[-size:], et[-size:], size
            pos = (self.queue_ptr + torch.arange(n, device=es.device)) % size
            self.queue_s[pos] = es.to(self.queue_s.dtype)
            self.queue_t[pos] = et.to(self.queue_t.dtype)
            self.queue_ptr.fill_(int((self.queue_ptr + n) % size))

    # ------------------------------------------------------------------ loss
    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        if self.embed_s is None:
            raise RuntimeError("CRD.prepare() must run before forward()")
        assert teacher is not None
        self.flush_updates()
        es, et = self.embed(student.features["pooled"], teacher.features["pooled"])
        index = None
        if self.queue_size is None:
            if batch.index is None:
                raise IncompatibleError("CRD's memory bank needs batch.index (sample ids); this data source gives none "
                                        "(set queue_size=... to use a queue of recent embeddings instead)")
            index = batch.index.to(es.device).long().view(-1)
            if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.n_data):
                raise IncompatibleError(f"CRD: batch.index out of range for a bank of num_train={self.n_data} rows "
                                        f"(got {int(index.min())}..{int(index.max())})")
            s_scores, t_scores = self._bank_scores(es, et, index)
        else:
            s_scores, t_scores = self._queue_scores(es, et)
        out_s = torch.exp(s_scores / self.nce_t)
        out_t = torch.exp(t_scores / self.nce_t)
        loss = (nce_loss(out_s / self._z("z_s", out_s), self.n_data)
                + nce_loss(out_t / self._z("z_t", out_t), self.n_data))
        if self.training:
            self._pending = (es.detach(), et.detach(), index)
        return {"crd": self.weight * loss}

    def set_progress(self, epoch: int, epochs: int) -> None:
        super().set_progress(epoch, epochs)
        self.flush_updates()

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        self.flush_updates()
        super()._save_to_state_dict(destination, prefix, keep_vars)
