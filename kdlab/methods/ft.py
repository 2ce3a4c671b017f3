"""Factor transfer: the student's "translated" factor imitates the teacher's "paraphrased" factor."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.core import Batch, DataInfo, Method, Outputs
from kdlab.errors import IncompatibleError
from kdlab.methods import register_method
from kdlab.methods._connectors import match_spatial, require_4d, require_teacher, resolve_pairs, stage_keys


def ft_loss(factor_s: Tensor, factor_t: Tensor, p: int = 1) -> Tensor:
    """mean over batch and elements of ``|F_S/‖F_S‖₂ − F_T/‖F_T‖₂|^p``, F = the flattened factor.

    The paper's ‖·‖_p of the difference of the normalised factors, averaged per element as in
    the authors' code (``nn.L1Loss`` for p = 1).
    """
    a = F.normalize(factor_s.flatten(1), dim=1)
    b = F.normalize(factor_t.to(factor_s.dtype).flatten(1), dim=1)
    d = a - b
    return d.abs().mean() if p == 1 else d.abs().pow(p).mean()


def reconstruction_loss(rec: Tensor, target: Tensor) -> Tensor:
    """mean |P(x) − x| (the authors' code trains the paraphraser with ``nn.L1Loss``)."""
    return F.l1_loss(rec, target.to(rec.dtype))


def _conv(cin: int, cout: int, transpose: bool = False) -> list[nn.Module]:
    conv = nn.ConvTranspose2d if transpose else nn.Conv2d
    return [conv(cin, cout, 3, 1, 1, bias=True), nn.LeakyReLU(0.1)]


class Paraphraser(nn.Module):
    """Teacher-side autoencoder: 3 convs C → C → kC → kC (factor), 3 transposed convs back to C.

    All 3×3, stride 1, bias, LeakyReLU(0.1), no BN — as in the authors' code.
    """

    def __init__(self, channels: int, factor_channels: int) -> None:
        super().__init__()
        c, k = channels, factor_channels
        self.encoder = nn.Sequential(*_conv(c, c), *_conv(c, k), *_conv(k, k))
        self.decoder = nn.Sequential(*_conv(k, k, True), *_conv(k, c, True), *_conv(c, c, True))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        factor = self.encoder(x)
        return factor, self.decoder(factor)


class Translator(nn.Module):
    """Student-side encoder: resample to the teacher's spatial size, then 3 convs Cs → Cs → kCt → kCt."""

    def __init__(self, channels: int, factor_channels: int, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size
        c, k = channels, factor_channels
        self.encoder = nn.Sequential(*_conv(c, c), *_conv(c, k), *_conv(k, k))

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(match_spatial(x, self.size))


@register_method("ft")
class FT(Method):
    """Paraphrasing Complex Network: Network Compression via Factor Transfer (Kim, Park, Kwak; NeurIPS 2018).

    A paraphraser P (autoencoder on the teacher's feature, factor width k·C_t, k = ``rate`` = 0.5)
    and a translator T on the student's feature. loss = weight · mean|T(s)/‖T(s)‖ − P_enc(t)/‖P_enc(t)‖|
    (p = 1), weight = 500 (the authors' CIFAR setting; RepDistiller uses 200 on CIFAR-100).

    layer: feature name or ``"s_key:t_key"``; default the deepest stage of each network (the
    authors' code and RepDistiller use the last stage).

    Deviation — paraphraser training: the paper pre-trains P on the teacher feature by
    reconstruction and then freezes it; that needs passes over the data before distillation,
    which a method cannot do in ``prepare`` (it sees one batch). Here P is trained *jointly*:
    the extra term ``ft_rec`` = rec_weight · mean|P(t) − t| on the (already detached) teacher
    feature trains only P, and the teacher factor enters the FT loss detached, so the FT term
    trains only the student and the translator — the same gradient split as the paper's, with
    a target factor that keeps improving during early training instead of being fixed.
    """

    needs = frozenset({"features:*"})
    family = "feature"

    def __init__(self, weight: float = 500.0, rate: float = 0.5, p: int = 1, layer: str | None = None,
                 rec_weight: float = 1.0) -> None:
        super().__init__()
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        if p not in (1, 2):
            raise ValueError(f"p must be 1 or 2, got {p}")
        self.weight, self.rate, self.p, self.layer, self.rec_weight = weight, rate, p, layer, rec_weight
        self.pair: tuple[str, str] | None = None
        self.paraphraser: Paraphraser | None = None
        self.translator: Translator | None = None

    def prepare(self, student: Outputs, teacher: Outputs | None, info: DataInfo) -> None:
        teacher = require_teacher("FT", teacher)
        if self.layer is None:
            s_keys, t_keys = stage_keys(student), stage_keys(teacher)
            if not s_keys or not t_keys:
                raise IncompatibleError(
                    f"FT needs stage features 'layer1'..'layerN' on both sides (or layer=...); the student "
                    f"has {sorted(student.features)} and the teacher {sorted(teacher.features)}")
            layers = [f"{s_keys[-1]}:{t_keys[-1]}"]
        else:
            layers = [self.layer]
        (s_key, t_key), = resolve_pairs("FT", student, teacher, layers)
        s, t = student.features[s_key], teacher.features[t_key]
        require_4d("FT", s_key if s_key == t_key else f"{s_key}:{t_key}", s, t)
        k = max(1, int(round(t.shape[1] * self.rate)))
        self.paraphraser = Paraphraser(t.shape[1], k).to(s.device)
        self.translator = Translator(s.shape[1], k, (int(t.shape[-2]), int(t.shape[-1]))).to(s.device)
        self.pair = (s_key, t_key)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        if self.pair is None or self.paraphraser is None or self.translator is None:
            raise RuntimeError("FT.prepare() must run before forward()")
        assert teacher is not None
        s_key, t_key = self.pair
        first = self.paraphraser.encoder[0]
        assert isinstance(first, nn.Conv2d)
        t = teacher.features[t_key].detach().to(first.weight.dtype)
        factor_t, rec = self.paraphraser(t)
        factor_s = self.translator(student.features[s_key])
        return {"ft": self.weight * ft_loss(factor_s, factor_t.detach(), self.p),
                "ft_rec": self.rec_weight * reconstruction_loss(rec, t)}
