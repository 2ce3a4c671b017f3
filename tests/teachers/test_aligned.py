"""Vocabulary safety: a mismatch is refused in one line naming both sizes; the exact token-string
alignment carries the teacher's distribution over and reports the mass it cannot place."""
from __future__ import annotations

import math

import pytest
import torch

from kdlab.core import Batch, Outputs
from kdlab.errors import IncompatibleError
from kdlab.teachers.aligned import AlignedTeacher, check_vocab


def test_mismatch_is_refused_naming_both_sizes():
    with pytest.raises(IncompatibleError) as e:
        check_vocab(152064, 151936)
    msg = str(e.value)
    assert "152064" in msg and "151936" in msg and "scheme.align=exact" in msg and len(msg.splitlines()) == 1
    with pytest.raises(IncompatibleError, match="2 ids map to different strings"):
        check_vocab(3, 3, ["a", "b", "c"], ["a", "c", "b"])
    check_vocab(3, 3, ["a", "b", "c"], ["a", "b", "c"])  # same vocabulary: fine
    check_vocab(5, 3, align="exact")  # an alignment is configured: the caller aligns


class _Fixed:
    """A teacher returning fixed logits over its own vocabulary and recording the ids it saw."""

    def __init__(self, logits):
        self.logits, self.seen = logits, None

    def __call__(self, batch):
        self.seen = batch.inputs["input_ids"]
        B, L = self.seen.shape
        return Outputs(self.logits.expand(B, L, -1), {}, batch.inputs.get("loss_mask"))


def _batch(ids):
    m = torch.ones_like(ids, dtype=torch.bool)
    return Batch({"input_ids": ids, "attention_mask": m, "loss_mask": m})


def test_exact_alignment_of_a_padded_teacher_vocabulary():
    # teacher: "a" "b" "c" + two padding entries (unused by the student); probabilities .5 .2 .1 .1 .1
    p = torch.tensor([0.5, 0.2, 0.1, 0.1, 0.1])
    t = _Fixed(p.log())
    al = AlignedTeacher(t, ["b", "a", "c", "<pad1>", "<pad2>"], ["a", "b", "c"])
    out = al(_batch(torch.tensor([[0, 1, 2]])))
    assert t.seen.tolist() == [[1, 0, 2]]  # student ids translated to the teacher's
    q = out.logits.softmax(-1)[0, 0]
    # shared tokens renormalised over their 0.8 of the mass
    torch.testing.assert_close(q, torch.tensor([0.2, 0.5, 0.1]) / 0.8)
    assert al.unmatched_mass == pytest.approx(0.2, abs=1e-6)


def test_student_tokens_without_a_teacher_counterpart_share_the_unmatched_mass():
    t = _Fixed(torch.tensor([0.6, 0.3, 0.1]).log())
    al = AlignedTeacher(t, ["a", "b", "zz"], ["a", "b", "x", "y"])
    out = al(_batch(torch.tensor([[0, 1]])))
    q = out.logits.exp()[0, 0]
    torch.testing.assert_close(q, torch.tensor([0.6, 0.3, 0.05, 0.05]))
    assert float(out.logits.exp().sum(-1).max()) == pytest.approx(1.0, abs=1e-6)
    assert al.unmatched_mass == pytest.approx(0.1, abs=1e-6)
    with pytest.raises(IncompatibleError, match="student token id 2 has no exact counterpart"):
        al(_batch(torch.tensor([[2]])))
    assert math.isfinite(al.unmatched_mass)
