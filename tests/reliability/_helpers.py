from pathlib import Path

import torch


def make_teacher(out: Path, model: str = "mlp_tiny", epochs: int = 1, seed: int = 0) -> Path:
    """A digits teacher checkpoint at ``out/best`` (trained by ``fit``, without the run report)."""
    from kdlab.data import load_data
    from kdlab.engine.distiller import Distiller
    from kdlab.engine.loop import Schedule, fit
    from kdlab.engine.run import model_meta
    from kdlab.methods import create_method
    from kdlab.models.load import model_for_data

    data = load_data("digits", split_seed=seed)
    torch.manual_seed(seed)
    m = model_for_data(model, data)
    fit(Distiller(m, None, [create_method("ce")]), data, Schedule(epochs=epochs, batch_size=64), seed=seed,
        run_dir=out, meta={**model_meta(m, data), "command": "train", "seed": seed}, progress=False)
    return out / "best"
