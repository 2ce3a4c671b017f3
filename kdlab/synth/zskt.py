"""ZSKT: Zero-shot Knowledge Transfer via Adversarial Belief Matching (Micaelli & Storkey, NeurIPS 2019)."""
from __future__ import annotations

from typing import Literal

from kdlab.synth import register_synth
from kdlab.synth.dfad import DFAD


@register_synth("zskt")
class ZSKT(DFAD):
    """Zero-shot Knowledge Transfer via Adversarial Belief Matching (Micaelli & Storkey, NeurIPS 2019).

    The adversarial game of DFAD with the paper's settings: the generator maximises
    ``KL(teacher ‖ student)`` on ``G(z)``, ``student_steps = 10`` student steps per generator step
    (``n_s``/``n_g`` = 10/1), latent 100, generator Adam at 1e-3, batch 128. The student minimises
    the same KL (KD at T = 1, the run's default objective here); the paper's attention-transfer
    term is ``--method kd+at``.
    """

    student_method = {"name": "kd", "T": 1.0}

    def __init__(self, batch_size: int = 128, nz: int = 100, ngf: int = 64, lr: float = 1e-3,
                 student_steps: int = 10, loss: Literal["l1", "kl"] = "kl") -> None:
        super().__init__(batch_size, nz, ngf, lr, student_steps, loss)
