"""Read back what a plot script drew, so plot tests check data, not file sizes."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def plot_module(number: int):
    """scripts/plot_figure<number>.py as a module (its `_style` import needs scripts/ on the path)."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return importlib.import_module(f"plot_figure{number}")


def line(ax, label: str) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) data of the one line labelled ``label`` on ``ax``."""
    found = [ln for ln in ax.get_lines() if ln.get_label() == label]
    assert len(found) == 1, (label, [ln.get_label() for ln in ax.get_lines()])
    x, y = found[0].get_data()
    return np.asarray(x, float), np.asarray(y, float)


def labels(ax) -> list[str]:
    """Labels of the lines drawn on ``ax`` (matplotlib's unlabelled lines start with '_')."""
    return [ln.get_label() for ln in ax.get_lines() if not ln.get_label().startswith("_")]


def series(df, run_id: str, metric: str, x: str = "outer_step") -> tuple[np.ndarray, np.ndarray]:
    """One run's values of ``metric`` ordered by ``x``, straight from the CSV rows."""
    sub = df[(df["run_id"] == run_id) & (df["metric"] == metric)].sort_values(x)
    return sub[x].to_numpy(float), sub["value"].to_numpy(float)


def assert_same_curve(got, want, rtol=1e-12):
    """Two (x, y) curves agree (NaN where the other has NaN or a non-finite value)."""
    (gx, gy), (wx, wy) = got, want
    np.testing.assert_allclose(gx, wx, rtol=rtol)
    np.testing.assert_allclose(gy, np.where(np.isfinite(wy), wy, np.nan), rtol=rtol)
