"""Plot of the tiny test figure: every run's full-horizon loss and the grid's minimum.

python tests/figures/plot_tiny.py <metrics.csv> <out.png>
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from pes import results


def figures(df: pd.DataFrame, fig_dir: Path) -> dict:
    fig, ax = plt.subplots(figsize=(4, 3))
    loss = results.metric_table(results.run_rows(df), "full_loss")
    for run in loss.columns:
        ax.plot(loss.index, loss[run], marker="o", label=run)
    grid = results.source_rows(df, "grid").set_index("metric")["value"]
    ax.axhline(grid["full_loss/min"], color="0.5", linestyle=":", label="grid minimum")
    ax.set_xlabel("outer step")
    ax.set_ylabel("full-horizon loss")
    ax.legend()
    return {"": fig}


def tables(df: pd.DataFrame, fig_dir: Path) -> dict:
    return {"final full_loss": results.final_values(results.run_rows(df), "full_loss").to_frame()}


def main(argv: list[str]) -> None:
    csv, out = Path(argv[0]), Path(argv[1])
    df = results.validate(pd.read_csv(csv))
    for suffix, fig in figures(df, csv.parent).items():
        path = out.with_name(out.stem + suffix + out.suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        print(path)


if __name__ == "__main__":
    main(sys.argv[1:])
