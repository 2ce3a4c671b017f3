"""The base of every typed config section (a contract, like :mod:`kdlab.core`).

Each layer defines the typed section it consumes (``DataSpec`` in :mod:`kdlab.data`, ``Schedule`` in
:mod:`kdlab.engine.schedule`, ``TeacherSpec`` in :mod:`kdlab.teachers.resolve`, ...); :mod:`kdlab.config`
composes them into a run config. Unknown keys are errors; assignments are validated.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
