"""Figure 6: best meta-objective found so far vs total compute, PES / truncated ES / random search.

    python scripts/plot_figure6.py results/quick/figure6/metrics.csv results/quick/figures/figure6.png

Reads only the merged CSV: metrics ``best_meta_objective`` and ``total_compute`` of every
method (estimator column ``pes``, ``es``, ``random_search``), one series per seed.  Each
method's curve is the mean over seeds with a min-max band; seeds share the compute grid of
their method.  Compute counts inner steps: N K per outer iteration for ES/PES, T x runs per
configuration for random search.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _style  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

METHODS = {"pes": "PES", "es": "Truncated ES", "random_search": "Random search"}
STYLE = {"random_search": dict(color=_style.COLORS["random"], linestyle="-", linewidth=1.5)}


def curves(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """estimator -> DataFrame(compute, mean, min, max, n_seeds) of the best meta-objective."""
    sub = df[df["metric"].isin(["best_meta_objective", "total_compute"])]
    if sub.empty:
        raise SystemExit("figure 6 needs metrics best_meta_objective and total_compute in the CSV")
    wide = sub.pivot_table(
        index=["estimator", "run_id", "seed", "outer_step"], columns="metric", values="value"
    ).reset_index()
    out = {}
    for est, g in wide.groupby("estimator", sort=False):
        table = g.pivot_table(index="total_compute", columns="seed", values="best_meta_objective")
        table = table.dropna()  # compute points every seed reached
        out[str(est)] = pd.DataFrame(
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
    finite = []
    for est in [m for m in METHODS if m in data] + [m for m in data if m not in METHODS]:
        c = data[est]
        style = STYLE.get(est, _style.style(est))
        label = f"{METHODS.get(est, est)} ({int(c['n_seeds'].iloc[0])} seeds)"
        ax.plot(c["compute"], c["mean"], label=label, **style)
        ax.fill_between(c["compute"], c["min"], c["max"], color=style.get("color"), alpha=0.15)
        finite += [v for v in c["max"] if v < float("inf")] + [v for v in c["min"] if v < float("inf")]
    if finite:  # a diverged first configuration (+inf) must not flatten the axis
        lo, hi = min(finite), sorted(finite)[int(0.9 * (len(finite) - 1))]
        ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    ax.set_xlabel("Total compute (inner steps)")
    ax.set_ylabel("Best meta-objective so far (sum of T validation losses)")
    ax.set_title("Fashion-MNIST MLP, 29 hyperparameters")
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: plot_figure6.py <merged metrics.csv> <out.png>")
    df = _style.read(argv[0])
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    plot(df, ax)
    _style.save(fig, argv[1])


if __name__ == "__main__":
    main(sys.argv[1:])
