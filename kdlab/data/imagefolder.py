"""A folder of images, one subfolder per class, read with Pillow; :func:`imagefolder` gives the layout::

    root/cat/001.png  root/dog/xyz.jpg  ...                      (test split carved by load_data)
    root/train/cat/...  root/test/cat/...                        (explicit train/test split)
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from kdlab.data import RawData, register_dataset
from kdlab.errors import ConfigError, DataError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()


def _class_dirs(d: Path) -> list[Path]:
    try:
        return sorted((p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)
    except OSError as e:
        raise DataError(f"cannot list image folder {d}: {e.strerror or e}") from None


def _image_files(d: Path) -> list[Path]:
    try:
        return sorted((p for p in d.rglob("*") if _is_image(p)
                       and not any(part.startswith(".") for part in p.relative_to(d).parts)), key=str)
    except OSError as e:
        raise DataError(f"cannot list image folder {d}: {e.strerror or e}") from None


def _read(path: Path, mode: str, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                im = opened.convert(mode)
                if im.size != (size, size):
                    im = im.resize((size, size), Image.Resampling.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"cannot read image {path}: {e}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise DataError(f"cannot read image {path}: {type(e).__name__}: {e}") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _load_split(d: Path, classes: list[str], mode: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = {c: i for i, c in enumerate(classes)}
    xs: list[np.ndarray] = []
    ys: list[int] = []
    for cdir in _class_dirs(d):
        if cdir.name not in ids:
            raise DataError(f"{cdir}: class {cdir.name!r} does not exist in the training folder "
                            f"(classes: {', '.join(classes)})")
        files = _image_files(cdir)
        if not files:
            raise DataError(f"class folder {cdir} contains no images "
                            f"(extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
        for f in files:
            xs.append(_read(f, mode, size))
            ys.append(ids[cdir.name])
    if not xs:
        raise DataError(f"image folder {d} has no class subfolders with images")
    return torch.from_numpy(np.stack(xs)), torch.tensor(ys, dtype=torch.long)


@register_dataset("imagefolder")
def imagefolder(root: str | None = None, image_size: int = 32, grayscale: bool = False) -> RawData:
    """Images in one subfolder per class under ``root`` (default ``$KDLAB_DATA``):
    ``root/<class>/<image>`` (load_data carves the test split), or ``root/train/<class>/<image>`` and
    optionally ``root/test/<class>/<image>``, used when ``train`` (and ``test``) are the only subfolders
    of ``root``. Class ids follow the sorted folder names of the training folder; a test class must also
    be a training class. Each class folder is searched recursively for at least one .png, .jpg, .jpeg,
    .bmp, .gif, .tif, .tiff, .webp, .ppm, .pgm or .pbm file (hidden files and folders are skipped);
    images are converted to RGB (``grayscale=True``: one channel) and resized to ``image_size`` squared.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
        raise ConfigError(f"data option 'image_size' must be a positive integer, got {image_size!r}")
    if not isinstance(grayscale, bool):
        raise ConfigError(f"data option 'grayscale' must be true or false, got {grayscale!r}")
    root = root or os.environ.get("KDLAB_DATA")
    if not root:
        raise DataError("imagefolder: no folder given; set data.root=DIR (--root DIR) or KDLAB_DATA to a directory "
                        "with one subfolder per class")
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"image folder {base} " + ("is not a directory" if base.exists() else "does not exist"))
    mode = "L" if grayscale else "RGB"
    top = {p.name for p in _class_dirs(base)}
    split = "train" in top and top <= {"train", "test"}
    tdir = base / "train" if split else base
    classes = [p.name for p in _class_dirs(tdir)]
    if not classes:
        raise DataError(f"image folder {tdir} is empty: expected one subfolder per class")
    x, y = _load_split(tdir, classes, mode, image_size)
    tx = ty = None
    if split and "test" in top:
        tx, ty = _load_split(base / "test", classes, mode, image_size)
    return RawData(x, y, tx, ty, classes, augment=True, pad=max(1, image_size // 8),
                   raw=f"PIL image converted to {mode}, resized (bilinear) to {image_size}x{image_size}, uint8 0..255, "
                       "transposed from [H, W, C] to [C, H, W]")
