"""docs/guide.md and notebooks/guide.ipynb: the notebook runs the guide's code, and it works.

The notebook is executed as a user would run it (its own kernel, float32, core dependencies
only); it asserts its own verdicts (PES consistent, truncated ES and TBPTT biased), and this test
checks the printed results and that the guide shows the verdicts the notebook prints.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "guide.md"
NOTEBOOK = ROOT / "notebooks" / "guide.ipynb"


def _guide_blocks(kind: str) -> list[str]:
    return [b.rstrip("\n") for b in re.findall(rf"```{kind}\n(.*?)```", GUIDE.read_text(), flags=re.S)]


def _code_cells(nb) -> list[str]:
    return [cell.source.rstrip("\n") for cell in nb.cells if cell.cell_type == "code"]


def test_the_notebook_runs_exactly_the_guides_code():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert _code_cells(nb) == _guide_blocks("python")
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), (
        "commit the notebook without outputs"
    )


def test_the_guide_notebook_executes_and_reaches_its_verdicts():
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]
    printed = "\n".join(out.get("text", "") for out in outputs)
    verdicts = [line for line in printed.splitlines() if re.match(r"^\w+: (consistent|biased)", line)]
    assert [v.split(":")[0] for v in verdicts] == ["pes", "es", "tbptt"], printed
    assert verdicts[0].startswith("pes: consistent with the exact gradient"), printed
    assert verdicts[1].startswith("es: biased by") and verdicts[2].startswith("tbptt: biased by"), printed
    assert re.search(r"^pes step-unlocked +variance [0-9.e+-]+ ± ", printed, flags=re.M), printed
    assert "theta:" in printed and "mean unroll loss per 100 steps:" in printed
    # the guide shows the same verdicts as the run
    shown = [line for line in _guide_blocks("text")[0].splitlines() if re.match(r"^\w+: ", line)]
    assert [s.split(" by ")[0].split(" with ")[0] for s in shown] == [
        v.split(" by ")[0].split(" with ")[0] for v in verdicts
    ]
