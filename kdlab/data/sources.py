"""Imports every built-in data source so its @register_dataset runs."""
import importlib

for _mod in ("digits", "fashion_mnist", "cifar", "imagefolder", "npz", "csv"):
    try:
        importlib.import_module(f"kdlab.data.{_mod}")
    except ModuleNotFoundError as e:  # optional source not present in this build
        if e.name != f"kdlab.data.{_mod}":
            raise
