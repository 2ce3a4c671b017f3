"""Imports every data source module of :mod:`kdlab.data` so its ``@register_dataset`` runs.

Run from the bottom of ``kdlab/data/__init__.py``, once ``register_dataset`` exists.
"""
from kdlab import data as _package
from kdlab.registry import import_submodules

import_submodules(_package.__name__, _package.__path__)
