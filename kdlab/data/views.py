"""Views of a dataset: the same samples seen another way (lower resolution, blur, edges, one channel).

Cross-modal distillation trains a teacher on one view and a student on another; a student trained
on a view records it in its checkpoint's data provenance, so ``kdlab eval`` and ``kdlab export``
reload the data through the same view.
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.data import DataSplits, Split
from kdlab.errors import ConfigError

VIEWS = ("full", "lowres:K", "blur:K", "edges", "gray", "channel:i")


def _apply(x: Tensor, view: str) -> Tensor:
    name, _, arg = view.partition(":")
    if name == "full":
        return x
    if x.dim() != 4:
        raise ConfigError(f"view {view!r} needs images [N, C, H, W], got shape {tuple(x.shape)}")
    if name in ("lowres", "blur"):
        try:
            k = int(arg)
        except ValueError:
            raise ConfigError(f"view {view!r}: give an integer factor, e.g. {name}:2") from None
        if k < 1 or k > min(x.shape[-2:]):
            raise ConfigError(f"view {view!r}: factor must be in 1..{min(x.shape[-2:])}")
        small = F.avg_pool2d(x, k, ceil_mode=True)
        return small if name == "lowres" else F.interpolate(small, size=x.shape[-2:], mode="nearest")
    if name == "edges":
        kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        w = torch.stack([kx, kx.t()]).unsqueeze(1)  # [2, 1, 3, 3]
        c = x.shape[1]
        g = F.conv2d(x.reshape(-1, 1, *x.shape[-2:]), w, padding=1)
        return g.pow(2).sum(1, keepdim=True).sqrt().reshape(x.shape[0], c, *x.shape[-2:])
    if name == "gray":
        return x.mean(1, keepdim=True)
    if name == "channel":
        try:
            i = int(arg)
        except ValueError:
            raise ConfigError(f"view {view!r}: give a channel number, e.g. channel:0") from None
        if not 0 <= i < x.shape[1]:
            raise ConfigError(f"view {view!r}: the images have {x.shape[1]} channel(s)")
        return x[:, i : i + 1]
    raise ConfigError(f"unknown view {view!r} (views: {', '.join(VIEWS)})")


def _view_split(s: Split, view: str, chunk: int = 4096) -> Tensor:
    parts = []
    for start in range(0, len(s), chunk):
        x = s.x[start : start + chunk].float()
        parts.append(_apply(x * s.scale if s.scale != 1.0 else x, view))
    return torch.cat(parts)


def view_data(data: DataSplits, view: str) -> DataSplits:
    """The same samples (same ids, labels and split membership) seen through ``view``, with
    normalisation statistics recomputed on the viewed training split."""
    if view == "full":
        return data
    tr, va, te = (_view_split(s, view) for s in (data.train, data.val, data.test))
    if tr.dim() == 4:
        mean, std = tr.mean(dim=(0, 2, 3)), tr.std(dim=(0, 2, 3)).clamp_min(1e-6)
    else:
        mean, std = tr.mean(0), tr.std(0).clamp_min(1e-6)

    def mk(s: Split, x: Tensor) -> Split:
        return replace(s, x=x.contiguous(), mean=mean, std=std, scale=1.0)

    # the view is part of the data: a checkpoint trained on it records it, and reloading applies it
    return replace(data, name=f"{data.name}[{view}]", train=mk(data.train, tr), val=mk(data.val, va),
                   test=mk(data.test, te), augment=None, provenance={**data.provenance, "view": view},
                   raw_scale=1.0, raw=f"the {view!r} view (kdlab.data.views) of {data.name}'s inputs scaled to [0, 1]")


