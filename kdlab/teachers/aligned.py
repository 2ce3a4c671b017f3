"""Vocabulary safety for token teachers: refuse a mismatch, or align by exact token strings.

A teacher and a student over different vocabularies (sizes or token strings) would be compared
position by position over unrelated ids: :func:`check_vocab` refuses that with a one-line error
naming both sizes, unless an alignment is configured. :class:`AlignedTeacher` is the exact
token-string mapping: the student's input ids are translated to the teacher's, and the teacher's
log-probabilities over its vocabulary are carried to the student's; the teacher's probability
mass on tokens the student does not have (``unmatched_mass``) is measured and spread uniformly
over the student tokens the teacher does not have (renormalised away when there are none).

It assumes both tokenizers split the text the same way (a family whose vocabularies differ by
padding or a few added tokens); sequences tokenized differently need a sequence-level alignment,
which this is not.
"""
from __future__ import annotations

import math

import torch

from kdlab.core import Batch, Outputs, Teacher
from kdlab.errors import IncompatibleError


def check_vocab(teacher_size: int, student_size: int, teacher_tokens: list[str] | None = None,
                student_tokens: list[str] | None = None, align: str = "none") -> None:
    """Raise IncompatibleError when the vocabularies differ and ``align`` is ``none``."""
    if align != "none":
        return
    if teacher_size != student_size:
        raise IncompatibleError(f"the teacher's vocabulary has {teacher_size} tokens but the student's {student_size}; "
                                "use one tokenizer for both or set scheme.align=exact (token-string mapping)")
    if teacher_tokens is not None and student_tokens is not None and teacher_tokens != student_tokens:
        diff = sum(a != b for a, b in zip(teacher_tokens, student_tokens))
        raise IncompatibleError(f"the teacher's and the student's vocabularies both have {teacher_size} tokens but "
                                f"{diff} ids map to different strings; set scheme.align=exact (token-string mapping)")


class AlignedTeacher:
    """A token teacher seen through an exact token-string mapping (see the module docstring).

    ``unmatched_mass``: the mean teacher probability, over the tokens it scored, on teacher
    tokens with no student counterpart (0 when every teacher token has one).
    """

    def __init__(self, teacher: Teacher, teacher_tokens: list[str], student_tokens: list[str]) -> None:
        t_id = {s: i for i, s in enumerate(teacher_tokens)}
        s2t = torch.tensor([t_id.get(s, -1) for s in student_tokens], dtype=torch.long)
        if int((s2t >= 0).sum()) == 0:
            raise IncompatibleError(f"no token string is shared by the teacher's {len(teacher_tokens)} and the "
                                    f"student's {len(student_tokens)} tokens: exact alignment is impossible")
        self.teacher, self.s2t = teacher, s2t
        self.vt, self.vs = len(teacher_tokens), len(student_tokens)
        matched = torch.zeros(self.vt, dtype=torch.bool)
        matched[s2t[s2t >= 0]] = True
        self.t_matched = matched
        self.student_unmatched = int((s2t < 0).sum())
        self._mass, self._tokens = 0.0, 0

    @property
    def unmatched_mass(self) -> float:
        return self._mass / max(self._tokens, 1)

    def __call__(self, batch: Batch) -> Outputs:
        x = batch.inputs
        ids = x["input_ids"] if isinstance(x, dict) else x
        t_ids = self.s2t.to(ids.device)[ids]
        real = x.get("attention_mask") if isinstance(x, dict) else None
        missing = (t_ids < 0) if real is None else (t_ids < 0) & real.bool()
        t_ids = t_ids.clamp_min(0)  # padding (never attended to, never learned) reads as teacher id 0
        if bool(missing.any()):
            bad = int(ids[missing][0])
            raise IncompatibleError(f"student token id {bad} has no exact counterpart in the teacher's vocabulary; "
                                    "the teacher cannot read this input")
        tb = Batch({**x, "input_ids": t_ids} if isinstance(x, dict) else t_ids, batch.targets, batch.index, batch.view)
        out = self.teacher(tb)
        logp = torch.log_softmax(out.logits.float(), dim=-1)
        s2t = self.s2t.to(logp.device)
        have = logp[..., s2t.clamp_min(0)]  # [B, L, Vs]
        lost = torch.logsumexp(logp.masked_fill(self.t_matched.to(logp.device), float("-inf")), dim=-1)  # [B, L]
        keep = out.mask if out.mask is not None else torch.ones(lost.shape, dtype=torch.bool, device=lost.device)
        self._mass += float(lost.exp()[keep.bool()].sum())
        self._tokens += int(keep.sum())
        if self.student_unmatched:
            fill = (lost - math.log(self.student_unmatched)).unsqueeze(-1).expand_as(have)
            aligned = torch.where((s2t >= 0).view(*([1] * (have.dim() - 1)), -1), have, fill)
        else:
            aligned = have - torch.logsumexp(have, dim=-1, keepdim=True)  # renormalised over shared tokens
        return Outputs(aligned, out.features, out.mask)

    def to(self, device: torch.device | str) -> "AlignedTeacher":
        if hasattr(self.teacher, "to"):
            self.teacher.to(device)
        return self


