"""Figure 2: influence balancing, 500-step loss vs outer iteration (log scale).

python scripts/plot_figure2.py results/quick/figure2/metrics.csv results/quick/figures/figure2.png
"""

from __future__ import annotations

import _style
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from pes import results

ORDER = ["tbptt-k1", "tbptt-k10", "tbptt-k100", "es-k1", "pes-k1", "uoro-k1", "rtrl-k1"]
LABELS = {
    "tbptt-k1": "TBPTT 1",
    "tbptt-k10": "TBPTT 10",
    "tbptt-k100": "TBPTT 100",
    "es-k1": "ES",
    "pes-k1": "PES",
    "uoro-k1": "UORO",
    "rtrl-k1": "RTRL",
}
TBPTT_SHADES = {"tbptt-k1": "#98df8a", "tbptt-k10": "#2ca02c", "tbptt-k100": "#125e12"}


def plot(df, ax) -> None:
    df = results.run_rows(df)
    loss = results.metric_table(df, "loss")
    estimator = df.groupby("run_id")["estimator"].first()
    runs = [r for r in ORDER if r in loss.columns] + [r for r in loss.columns if r not in ORDER]
    for run in runs:
        kw = _style.style(estimator[run])
        if run in TBPTT_SHADES:
            kw["color"] = TBPTT_SHADES[run]
        y = loss[run].to_numpy()
        y = np.where(np.isfinite(y), y, np.nan)
        ax.plot(loss.index, y, label=LABELS.get(run, run), **kw)
    ax.set_yscale("log")
    ax.set_ylim(1e-13, 1e14)
    ax.set_yticks([1e-13, 1e-5, 1e3, 1e11])
    ax.set_xlim(0, loss.index.max())
    ax.set_xlabel("Iteration")
    ax.set_ylabel("Loss")
    ax.set_title("Influence balancing")
    ax.legend(fontsize=8, ncol=2, loc="upper left")


def figures(df, fig_dir=None) -> dict:
    fig, ax = plt.subplots(figsize=(5.5, 4))
    plot(df, ax)
    return {"": fig}


def tables(df, fig_dir=None) -> dict:
    runs = results.run_rows(df)
    final = pd.DataFrame({m: results.final_values(runs, m) for m in ("loss", "theta")})
    return {"Last logged loss and theta per run": final.reindex([r for r in ORDER if r in final.index])}


def main() -> None:
    _style.cli(figures, tables)


if __name__ == "__main__":
    main()
