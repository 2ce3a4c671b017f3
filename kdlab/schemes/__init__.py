"""Distillation schemes: ways of arranging teachers and students, each a function that builds a
trainable and calls :func:`kdlab.engine.loop.fit`.

    from kdlab.schemes import mutual, byot, teacher_assistant
    r = mutual(["cnn_tiny", "cnn_small"], "digits", epochs=5)
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {
    "mutual": "mutual", "Cohort": "mutual",
    "byot": "self_distill", "born_again": "self_distill", "snapshot_distill": "self_distill",
    "SelfDistiller": "self_distill", "SnapshotDistiller": "self_distill",
    "teacher_assistant": "assistant",
    "multi_teacher": "multi_teacher",
    "amalgamate": "amalgamate", "UnionTeacher": "amalgamate",
    "unlabeled": "unlabeled", "MixedLoader": "unlabeled",
    "lifelong": "lifelong", "LwF": "lifelong",
    "cross_modal": "cross_modal", "PairedTeacher": "cross_modal", "view_data": "cross_modal",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"kdlab.schemes.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'kdlab.schemes' has no attribute {name!r}")
