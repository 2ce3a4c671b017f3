"""Teachers: anything mapping a Batch to Outputs without being trained (see kdlab.core.Teacher)."""
from kdlab.teachers.ensemble import EnsembleTeacher
from kdlab.teachers.from_file import FileTeacher
from kdlab.teachers.frozen import FrozenTeacher

__all__ = ["EnsembleTeacher", "FileTeacher", "FrozenTeacher"]
