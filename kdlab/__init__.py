"""kdlab: knowledge distillation toolkit (teachers, students, methods, schemes, evaluation, export)."""
from kdlab.api import Result, distill, evaluate, load_model, run, scheme, train
from kdlab.core import Batch, DataInfo, Method, Outputs, Teacher, Trainable

__all__ = ["Batch", "DataInfo", "Method", "Outputs", "Result", "Teacher", "Trainable", "distill", "evaluate",
           "load_model", "run", "scheme", "train"]
__version__ = "0.1.0"
