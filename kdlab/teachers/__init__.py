"""Teachers: anything mapping a Batch to Outputs without being trained (see kdlab.core.Teacher)."""
from kdlab.teachers.frozen import FrozenTeacher

__all__ = ["FrozenTeacher"]
