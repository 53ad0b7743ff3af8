"""Execute a figure notebook against a given CSV (shared by the figure tests).

nbclient and nbformat come with the ``dev`` extra: without them the notebook tests skip
(imported when a notebook runs, so the figure tests' other checks still run).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def execute(number: int, csv: Path, timeout: int = 300):
    """Run notebooks/figure<number>.ipynb with PES_FIGURE_CSV=csv; return the executed notebook."""
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    path = ROOT / "notebooks" / f"figure{number}.ipynb"
    nb = nbformat.read(path, as_version=4)
    old = os.environ.get("PES_FIGURE_CSV")
    os.environ["PES_FIGURE_CSV"] = str(csv)
    try:
        client = nbclient.NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        )
        client.execute()
    finally:
        if old is None:
            os.environ.pop("PES_FIGURE_CSV", None)
        else:
            os.environ["PES_FIGURE_CSV"] = old
    return nb


def has_image(nb) -> bool:
    return any(
        "image/png" in out.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )
