"""kdlab: knowledge distillation toolkit (teachers, students, methods, schemes, evaluation, export)."""
from kdlab.api import Result, distill, evaluate, load_model, run, train
from kdlab.core import Batch, DataInfo, Method, Outputs, Teacher

__all__ = ["Batch", "DataInfo", "Method", "Outputs", "Result", "Teacher", "distill", "evaluate", "load_model", "run",
           "train"]
__version__ = "0.1.0"
