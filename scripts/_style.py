"""One palette and label map for every figure; plot scripts read only CSVs."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # scripts render headless; notebooks keep their backend
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pes import results  # noqa: E402

COLORS = {
    "pes": "#1f4e9c",
    "es": "#d62728",
    "tbptt": "#2ca02c",
    "rtrl": "#000000",
    "uoro": "#9467bd",
    "nres": "#17becf",
    "ars": "#8c564b",
    "openai_es": "#e377c2",
    "random": "#7f7f7f",
}
LINESTYLES = {"es": ":", "rtrl": "--"}
LINEWIDTHS = {"pes": 2.5}


def style(estimator: str) -> dict:
    return {
        "color": COLORS.get(estimator, None),
        "linestyle": LINESTYLES.get(estimator, "-"),
        "linewidth": LINEWIDTHS.get(estimator, 1.5),
    }


def read(path: str | Path, **validate_kwargs) -> pd.DataFrame:
    """Read and validate a results CSV (the only input a plot script has)."""
    return results.validate(pd.read_csv(path), **validate_kwargs)


def save(fig, out: str | Path) -> None:
    """Write the figure as PNG (the path given) and PDF beside it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150, bbox_inches="tight")
    fig.savefig(out.with_suffix(".pdf"), bbox_inches="tight")
    plt.close(fig)
