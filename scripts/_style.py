"""One palette, one reader and one command line for every plot script; plot scripts read only CSVs.

A plot script ``scripts/plot_<figure>.py`` (named by the figure YAML's ``plot:``) defines

* ``figures(df, fig_dir) -> {suffix: matplotlib Figure}``: the figure(s) drawn from the
  merged table ``df`` (``fig_dir`` holds the post-steps' extra tables, e.g.
  ``grid.csv``); suffix ``""`` is the main figure, others are written beside it
  as ``<out stem><suffix>.png``;
* optionally ``tables(df, fig_dir) -> {title: DataFrame}``: the numbers worth printing;
* ``main()``: usually ``_style.cli(figures, tables)``, i.e.
  ``python <script> <metrics.csv> <out.png>`` (PNG and PDF of every figure, tables printed).

The generic notebook (notebooks/figure.ipynb) calls the same two functions.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # scripts render headless; notebooks keep their backend
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import EngFormatter  # noqa: E402

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


def finish_axes(ax, xlabel: str, ylabel: str, title: str, *, eng_x: bool = False, legend_fontsize=8) -> None:
    """The axes' labels and title, a light grid and the legend; `eng_x` writes the x ticks
    with engineering prefixes (10k, 1M: compute counts)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if eng_x:
        ax.xaxis.set_major_formatter(EngFormatter())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_fontsize)


def table_path(fig_dir: str | Path, name: str) -> Path:
    """``fig_dir/name``, or its gzipped copy ``name.gz`` (stored results gzip large tables)."""
    path = Path(fig_dir) / name
    gz = path.with_name(path.name + ".gz")
    return gz if not path.exists() and gz.exists() else path


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


def cli(figures: Callable, tables: Callable | None = None, argv: list[str] | None = None) -> None:
    """``<metrics.csv> <out.png>``: save every figure (PNG + PDF) and print the tables."""
    parser = argparse.ArgumentParser(description="Draw a figure from its merged metrics.csv.")
    parser.add_argument("csv", help="the figure's merged metrics.csv")
    parser.add_argument("out", help="output PNG path (a PDF is written beside it)")
    args = parser.parse_args(argv)
    csv, out = Path(args.csv), Path(args.out)
    df = read(csv)
    if tables is not None:
        with pd.option_context("display.width", 200, "display.max_columns", 30, "display.precision", 4):
            for title, table in tables(df, csv.parent).items():
                print(f"{title}:\n{table.to_string()}\n")
    for suffix, fig in figures(df, csv.parent).items():
        path = out.with_name(out.stem + suffix + out.suffix)
        save(fig, path)
        print(path)
