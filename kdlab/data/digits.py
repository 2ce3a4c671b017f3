"""scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes)."""
from __future__ import annotations

import torch

from kdlab.data import RawData, register_dataset


@register_dataset("digits")
def digits(root: str | None = None) -> RawData:
    """scikit-learn's bundled 8×8 handwritten digits (``sklearn.datasets.load_digits``): 1,797 grayscale
    images, classes "0" to "9". Needs no files (``root`` is ignored) and has no test split, so load_data
    carves one; pixel values 0..16 are scaled to [0, 1].
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [N, 1, 8, 8] in [0, 1]
    y = torch.tensor(d.target, dtype=torch.long)
    return RawData(x, y, None, None, [str(i) for i in range(10)], augment=False, pad=1, raw_scale=1 / 16,
                   raw="sklearn.datasets.load_digits().images: float pixels 0..16, [N, 1, 8, 8]")
