"""Distillation schemes: ways of arranging teachers and students, one module each.

Each scheme module registers ``fn(ctx, opts) -> Result`` with ``@register_scheme(name, Options)``
(see :mod:`kdlab.schemes._common`): it builds its trainable(s) and hands each to the run
lifecycle, so every scheme leaves the same run directory layout, resumes and runs under torchrun.

    kdlab.scheme("mutual", "digits", epochs=5, peers=["cnn_tiny", "cnn_small"])   # Python
    kdlab mutual --peers cnn_tiny,cnn_small --data digits --epochs 5              # CLI
    kdlab mutual my_mutual.yaml train.lr=0.1                                     # YAML + overrides

What a scheme measured besides the student's test metrics is in ``Result.extra`` (and in
``summary.json``). :mod:`kdlab.schemes.offline` runs ``train``/``distill`` configs the same way.
"""
from kdlab.registry import import_submodules
from kdlab.schemes._common import SCHEMES, register_scheme, run_scheme, scheme_options

__all__ = ["SCHEMES", "register_scheme", "run_scheme", "scheme_options"]

import_submodules(__name__, __path__)
