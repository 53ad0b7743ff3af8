"""Figure 6: best meta-objective found so far vs total compute, PES / truncated ES / random search.

    python scripts/plot_figure6.py results/quick/figure6/metrics.csv results/quick/figures/figure6.png

Reads only the merged CSV: metrics ``best_meta_objective`` and ``total_compute`` of every
method (estimator column ``pes``, ``es``, ``random_search``), one series per seed.  Each
method's curve is the mean over seeds with a min-max band; seeds share the compute grid of
their method.  Compute counts inner steps: N K per outer iteration for ES/PES, T x runs per
configuration for random search (solid), and, dashed, T per configuration (the official plot's
axis).  The x range is the ES/PES runs' compute; the table printed with the figure gives every
method's value at its own end.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _style  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

PAPER_AXIS = "random_search_paper_axis"
METHODS = {
    "pes": "PES",
    "es": "Truncated ES",
    "random_search": "Random search",
    PAPER_AXIS: "Random search, T per configuration (official plot's axis)",
}
STYLE = {
    "random_search": dict(color=_style.COLORS["random"], linestyle="-", linewidth=1.5),
    PAPER_AXIS: dict(color=_style.COLORS["random"], linestyle="--", linewidth=1.0),
}


def curves(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """estimator -> DataFrame(compute, mean, min, max, n_seeds) of the best meta-objective.

    Random search appears twice: against ``total_compute`` (every inner step it spends) and
    against T per configuration (its ``inner_steps``), the axis of the official plot."""
    sub = df[df["metric"].isin(["best_meta_objective", "total_compute"])]
    if sub.empty:
        raise SystemExit("figure 6 needs metrics best_meta_objective and total_compute in the CSV")
    wide = sub.pivot_table(
        index=["estimator", "run_id", "seed", "outer_step"], columns="metric", values="value"
    ).reset_index()
    out = {}
    groups = [(str(est), g, "total_compute") for est, g in wide.groupby("estimator", sort=False)]
    rs = wide[wide["estimator"] == "random_search"]
    if not rs.empty:  # the official plot counts T per configuration: inner_steps of the rows
        steps = sub[sub["estimator"] == "random_search"].groupby(["run_id", "seed", "outer_step"])[
            "inner_steps"
        ]
        rs = rs.assign(
            paper_compute=steps.first()
            .reindex(pd.MultiIndex.from_frame(rs[["run_id", "seed", "outer_step"]]))
            .to_numpy()
        )
        groups.append((PAPER_AXIS, rs, "paper_compute"))
    for est, g, x in groups:
        table = g.pivot_table(index=x, columns="seed", values="best_meta_objective")
        table = table.dropna()  # compute points every seed reached
        out[est] = pd.DataFrame(
            {
                "compute": table.index.to_numpy(),
                "mean": table.mean(axis=1).to_numpy(),
                "min": table.min(axis=1).to_numpy(),
                "max": table.max(axis=1).to_numpy(),
                "n_seeds": table.shape[1],
            }
        )
    return out


def plot(df: pd.DataFrame, ax=None):
    ax = ax or plt.gca()
    data = curves(df)
    lows, starts = [], []
    for est in [m for m in METHODS if m in data] + [m for m in data if m not in METHODS]:
        c = data[est]
        style = STYLE.get(est, _style.style(est))
        label = f"{METHODS.get(est, est)} ({int(c['n_seeds'].iloc[0])} seeds)"
        ax.plot(c["compute"], c["mean"], label=label, **style)
        ax.fill_between(c["compute"], c["min"], c["max"], color=style.get("color"), alpha=0.15)
        lows.append(float(c["min"].min()))
        if est in ("pes", "es"):  # their starting point: the initial theta's meta-objective
            starts.append(float(c["max"].iloc[0]))
    runs_end = [float(data[e]["compute"].iloc[-1]) for e in ("pes", "es") if e in data]
    if runs_end:  # the runs' compute range (random search may go on; see tables())
        ax.set_xlim(0, 1.03 * max(runs_end))
    finite = [v for v in starts if np.isfinite(v)]
    if finite and lows:  # from the best value to the runs' start (a diverged configuration is +inf)
        lo, hi = min(lows), max(finite)
        ax.set_ylim(lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo))
    _style.finish_axes(
        ax,
        "Total compute (inner steps)",
        "Best meta-objective so far (sum of T validation losses)",
        "Fashion-MNIST MLP, 29 hyperparameters",
        eng_x=True,
    )
    return ax


def figures(df: pd.DataFrame, fig_dir=None) -> dict:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    plot(df, ax)
    return {"": fig}


def tables(df: pd.DataFrame, fig_dir=None) -> dict:
    """Best meta-objective per method at its last compute point (mean, min, max over seeds)."""
    summary = {
        METHODS.get(est, est): {
            "total_compute": float(c["compute"].iloc[-1]),
            "best mean": float(c["mean"].iloc[-1]),
            "best min": float(c["min"].iloc[-1]),
            "best max": float(c["max"].iloc[-1]),
            "seeds": int(c["n_seeds"].iloc[0]),
        }
        for est, c in curves(df).items()
    }
    return {"Best meta-objective at the end of each method": pd.DataFrame(summary).T}


def main() -> None:
    _style.cli(figures, tables)


if __name__ == "__main__":
    main()
