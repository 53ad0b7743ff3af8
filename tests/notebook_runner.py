"""Execute the generic figure notebook against a given CSV (shared by the figure tests).

nbclient and nbformat come with the ``dev`` extra: without them the notebook tests skip
(imported when a notebook runs, so the figure tests' other checks still run).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "figure.ipynb"


def execute(figure: int | str, csv: Path, timeout: int = 300):
    """Run notebooks/figure.ipynb for ``figure`` (a number, a name or a YAML path) on ``csv``."""
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    figure = f"figure{figure}" if isinstance(figure, int) else str(figure)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {"PES_FIGURE": figure, "PES_FIGURE_CSV": str(csv)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = nbclient.NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
        )
        client.execute()
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return nb


def execute_cases(cases: list[dict], timeout: int = 300) -> list[tuple[list, Exception | None]]:
    """Run notebooks/figure.ipynb once per case in ONE kernel (started once, imports once).

    A case sets the notebook's parameters (``FIGURE``, ``PROFILE``, ``RESULTS``, ``CSV``):
    the cell tagged ``parameters`` runs with the case's values appended, the cell tagged
    ``setup`` runs for the first case only, every other code cell runs for every case.
    Returns, per case, its executed code cells and the error that stopped it (None if every
    cell ran; a failing cell ends its case, and the next case goes on in the same kernel)."""
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    from nbclient.exceptions import CellExecutionError

    done = []
    with client.setup_kernel():
        for n, case in enumerate(cases):
            cells, error = [], None
            for index, cell in enumerate(nb.cells):
                tags = cell.metadata.get("tags", [])
                if cell.cell_type != "code" or ("setup" in tags and n > 0):
                    continue
                cell = copy.deepcopy(cell)
                if "parameters" in tags:
                    cell.source += "".join(f"\n{k} = {v!r}" for k, v in case.items())
                cells.append(cell)
                try:
                    client.execute_cell(cell, index)
                except CellExecutionError as err:
                    error = err
                    break
            done.append((cells, error))
    return done


def cell_outputs(cells) -> list:
    return [out for cell in cells for out in cell.outputs]


def outputs(nb) -> list:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def has_image(nb) -> bool:
    return any("image/png" in out.get("data", {}) for out in outputs(nb))


def text(nb) -> str:
    """Everything the notebook printed or displayed as text (tables included)."""
    parts = []
    for out in outputs(nb):
        parts.append(out.get("text", ""))
        parts += [str(v) for k, v in out.get("data", {}).items() if k in ("text/plain", "text/markdown")]
    return "\n".join(parts)


def assert_figure_and_notebook(figure: int, csv: Path, heading: str) -> None:
    """`reproduce` drew figure<N>.png (more than a blank canvas) and its PDF in the profile's
    figures folder, and the figure's notebook, run on `csv`, shows an image and `heading`."""
    out = csv.parent.parent / "figures" / f"figure{figure}.png"
    assert out.stat().st_size > 10_000 and out.with_suffix(".pdf").exists()
    nb = execute(figure, csv)
    assert has_image(nb)
    assert heading in text(nb)
