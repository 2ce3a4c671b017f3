"""Run reports: a self-contained HTML page with matplotlib plots (see :func:`write_report`)."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from kdlab.report.html import write_report

__all__ = ["report_after_run", "write_report"]


def report_after_run(run_dir: str | Path, **kwargs: Any) -> Path | None:
    """:func:`write_report` at the end of a run: a failure warns and never fails the run."""
    try:
        return write_report(run_dir, **kwargs)
    except Exception as e:  # the run's results are already saved; the report is a convenience
        warnings.warn(f"report for {run_dir} not written: {type(e).__name__}: {e}", RuntimeWarning, stacklevel=2)
        return None
