import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

torch.set_num_threads(1)


def trained_like_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Give every BatchNorm2d non-trivial running statistics, as after training, so that folding
    them or exporting the model is a real test (fresh statistics are the identity)."""
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.3, 0.3)
            mod.running_var.uniform_(0.5, 2.0)
    return model
