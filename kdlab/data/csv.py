"""Tabular data from a CSV file: a header row, numeric feature columns and one label column.

:func:`csv` states the format and its options.
"""
from __future__ import annotations

import csv as _csv
import math
from pathlib import Path

import numpy as np
import torch

from kdlab.data import RawData, register_dataset
from kdlab.data.npz import MAX_CLASSES, resolve_file
from kdlab.errors import ConfigError, DataError


def _read(path: Path, label_column: str, delimiter: str) -> tuple[list[str], list[list[float]], list[str]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = _csv.reader(fh, delimiter=delimiter)
            header = next(reader, None)
            if header is None or not any(h.strip() for h in header):
                raise DataError(f"{path}: empty file (a header row naming the columns is required)")
            header = [h.strip() for h in header]
            if label_column not in header:
                raise DataError(f"{path}: no label column {label_column!r} in the header "
                                f"(columns: {', '.join(header)}); set the option label_column")
            if len(set(header)) != len(header):
                dup = sorted({h for h in header if header.count(h) > 1})
                raise DataError(f"{path}: duplicate column names in the header: {', '.join(dup)}")
            li = header.index(label_column)
            features = [h for i, h in enumerate(header) if i != li]
            if not features:
                raise DataError(f"{path}: no feature columns besides the label column {label_column!r}")
            rows: list[list[float]] = []
            labels: list[str] = []
            for row in reader:
                if not row or all(not c.strip() for c in row):
                    continue  # blank line
                line = reader.line_num
                if len(row) != len(header):
                    raise DataError(f"{path}, line {line}: {len(row)} fields, the header has {len(header)}")
                label = row[li].strip()
                if not label:
                    raise DataError(f"{path}, line {line}: empty label")
                vals = []
                for i, cell in enumerate(row):
                    if i == li:
                        continue
                    try:
                        v = float(cell)
                    except ValueError:
                        raise DataError(f"{path}, line {line}: column {header[i]!r} is not a number: "
                                        f"{cell.strip()[:40]!r}") from None
                    if not math.isfinite(v):
                        raise DataError(f"{path}, line {line}: column {header[i]!r} is not finite: {cell.strip()!r}")
                    vals.append(v)
                rows.append(vals)
                labels.append(label)
    except OSError as e:
        raise DataError(f"cannot read CSV file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except _csv.Error as e:
        raise DataError(f"{path}: malformed CSV ({e})") from None
    if not rows:
        raise DataError(f"{path}: no data rows after the header")
    return features, rows, labels


def _features(rows: list[list[float]], path: Path) -> torch.Tensor:
    x = np.asarray(rows, dtype=np.float64)
    if (np.abs(x) > np.finfo(np.float32).max).any():
        raise DataError(f"{path}: some feature values overflow float32")
    return torch.from_numpy(x.astype(np.float32))


def _int_label(s: str) -> int | None:
    try:
        v = int(s)
    except ValueError:
        return None
    return v if v >= 0 else None


@register_dataset("csv")
def csv(root: str | None = None, path: str | None = None, label_column: str = "label",
        test_path: str | None = None, delimiter: str = ",") -> RawData:
    """A UTF-8 CSV file: the file ``root``, or the ``path`` option (relative to a ``root`` directory).
    It needs a header row, one label column (named by the ``label_column`` option, default "label") and
    numeric, finite feature columns (all the other columns); ``delimiter`` is the field separator and
    blank lines are skipped. Labels that are all non-negative integers are the class ids (classes "0" ..
    "K-1"); otherwise the sorted distinct label strings are the classes. ``test_path`` names a second CSV
    with the same columns as the test split (relative to a ``root`` directory; otherwise load_data
    carves one).
    """
    if not isinstance(label_column, str) or not label_column:
        raise ConfigError(f"data option 'label_column' must be a column name, got {label_column!r}")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ConfigError(f"data option 'delimiter' must be one character, got {delimiter!r}")
    f = resolve_file(root, path, "csv", "a CSV file with a header row")
    features, rows, labels = _read(f, label_column, delimiter)
    test = None
    if test_path:
        tf = resolve_file(root if root and Path(root).is_dir() else None, test_path, "csv", "a CSV test file")
        tfeatures, trows, tlabels = _read(tf, label_column, delimiter)
        if tfeatures != features:
            raise DataError(f"{tf}: feature columns differ from {f} ({', '.join(tfeatures)} vs {', '.join(features)})")
        test = (trows, tlabels, tf)
    all_labels = labels + (test[1] if test else [])
    int_ids = {s: v for s in all_labels if (v := _int_label(s)) is not None}
    if len(int_ids) == len(set(all_labels)):  # every label is a non-negative integer
        top = max(int_ids.values())
        if top >= MAX_CLASSES:
            raise DataError(f"{f}: label {top} is out of range (class ids must be 0..K-1 with K <= {MAX_CLASSES})")
        classes = [str(i) for i in range(top + 1)]
        ids = int_ids
    else:
        classes = sorted(set(labels))
        ids = {c: i for i, c in enumerate(classes)}
        if test:
            unknown = sorted(set(test[1]) - set(classes))
            if unknown:
                raise DataError(f"{test[2]}: labels not present in the training file {f}: {', '.join(unknown[:5])}")
    x = _features(rows, f)
    y = torch.tensor([ids[s] for s in labels], dtype=torch.long)
    tx = ty = None
    if test:
        tx = _features(test[0], test[2])
        ty = torch.tensor([ids[s] for s in test[1]], dtype=torch.long)
    return RawData(x, y, tx, ty, classes, augment=False,
                   raw=f"the CSV's feature columns as float32, in file order: {', '.join(features)}")
