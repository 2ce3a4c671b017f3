"""Teachers: anything mapping a Batch to Outputs without being trained (see kdlab.core.Teacher).

:func:`resolve_teacher` is the one way to get one from a module, a path or a ``teacher:`` section
(:class:`TeacherSpec`).
"""
from kdlab.teachers.ensemble import EnsembleTeacher
from kdlab.teachers.from_file import FileTeacher
from kdlab.teachers.frozen import FrozenTeacher
from kdlab.teachers.resolve import TeacherSpec, resolve_teacher

__all__ = ["EnsembleTeacher", "FileTeacher", "FrozenTeacher", "TeacherSpec", "resolve_teacher"]
