"""Figure 5: MNIST inverse-time-decay LR schedule, ES vs PES trajectories over grid heatmaps.

    python scripts/plot_figure5.py results/quick/figure5/metrics.csv results/quick/figures/figure5.png

Reads the merged metrics CSV and ``grid.csv`` beside it (the ``grid`` post-step).
Panel (a): filled contours of log(summed training loss over the full horizon), trajectories
of the runs with the
train_sum_loss objective; panel (b): contours of the final validation accuracy,
trajectories of the val_sum_acc runs.  Axes: log10 decay exponent (x), log10 initial
LR (y); truncated ES dashed; the start is a black star.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import patheffects

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _style  # noqa: E402
from _style import plt  # noqa: E402

from pes import results  # noqa: E402

LN10 = np.log(10.0)
GRID_CSV = "grid.csv"
PANELS = (
    ("train_sum_loss", "train_sum_loss", "(a) training-loss objective"),
    ("val_sum_acc", "final_val_acc", "(b) validation-accuracy objective"),
)


def grid_surface(grid: pd.DataFrame, metric: str):
    """(x = log10 decay, y = log10 init LR, Z[y, x]) from the grid CSV."""
    sub = grid[grid["metric"] == metric]
    lr = np.unique(sub["theta/0"].to_numpy())
    dec = np.unique(sub["theta/1"].to_numpy())
    order = np.lexsort([sub["theta/1"].to_numpy(), sub["theta/0"].to_numpy()])
    z = sub["value"].to_numpy()[order].reshape(len(lr), len(dec))
    return dec / LN10, lr / LN10, z


def _smooth(z: np.ndarray) -> np.ndarray:
    """Gaussian smoothing (sigma 1 cell) as in the paper's plots, for fine grids only."""
    if min(z.shape) < 20:
        return z
    k = np.exp(-0.5 * np.arange(-3, 4) ** 2)
    k /= k.sum()
    pad = np.pad(z, 3, mode="edge")
    rows = np.apply_along_axis(lambda r: np.convolve(r, k, mode="valid"), 1, pad)
    return np.apply_along_axis(lambda c: np.convolve(c, k, mode="valid"), 0, rows)


def run_objectives(df: pd.DataFrame) -> dict[str, str]:
    runs = results.run_rows(df)
    marks = runs[runs["metric"].str.startswith("objective/")]
    return {rid: m.split("/", 1)[1] for rid, m in marks.groupby("run_id")["metric"].first().items()}


def dataset_name(df: pd.DataFrame) -> str:
    names = sorted({m.split("/", 1)[1] for m in df["metric"] if m.startswith("dataset/")})
    return ", ".join(names) or "unknown dataset"


def draw(df: pd.DataFrame, grid: pd.DataFrame, title_suffix: str = ""):
    objectives = run_objectives(df)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    evaluation = results.source_rows(df, "evaluation")
    init = evaluation[evaluation["run_id"] == "init"].set_index("metric")["value"]
    df = results.run_rows(df)
    theta0 = (init["theta/1"] / LN10, init["theta/0"] / LN10) if "theta/0" in init else None
    for ax, (objective, metric, title) in zip(axes, PANELS, strict=True):
        x, y, z = grid_surface(grid, metric)
        if metric == "train_sum_loss":
            cs = ax.contourf(x, y, _smooth(np.log(np.minimum(z, 1e5))), levels=30, cmap="Purples_r")
            fig.colorbar(cs, ax=ax, label="log(sum of T training losses)")
        else:
            levels = np.arange(0.5, 1.0, 0.02) if np.nanmax(z) < 0.9 else np.arange(0.84, 0.99, 0.01)
            cs = ax.contourf(
                x,
                y,
                _smooth(z),
                levels=np.concatenate([[0.0], levels, [1.0]]),
                cmap="Blues",
                alpha=0.8,
            )
            fig.colorbar(cs, ax=ax, label="final validation accuracy")
        for rid in sorted(r for r, o in objectives.items() if o == objective):
            sub = df[df["run_id"] == rid]
            t0 = sub[sub["metric"] == "theta/0"].sort_values("outer_step")
            t1 = sub[sub["metric"] == "theta/1"].sort_values("outer_step")
            est = sub["estimator"].iloc[0]
            k = int(sub["trunc_len"].iloc[0])
            st = _style.style(est)
            xs, ys = t1["value"].to_numpy() / LN10, t0["value"].to_numpy() / LN10
            if theta0 is not None:
                xs, ys = np.concatenate([[theta0[0]], xs]), np.concatenate([[theta0[1]], ys])
            ax.plot(
                xs,
                ys,
                color=st["color"],
                linestyle="--" if est == "es" else "-",
                linewidth=2.0 if k == 10 else 1.4,
                alpha=1.0 if k == 10 else 0.7,
                label=f"{est.upper()} K={k}",
                path_effects=[
                    patheffects.Stroke(linewidth=3.5, foreground="white"),
                    patheffects.Normal(),
                ],
            )
            ax.plot(
                t1["value"].iloc[-1] / LN10,
                t0["value"].iloc[-1] / LN10,
                "o",
                color=st["color"],
                ms=4,
            )
        if theta0 is not None:
            ax.plot(*theta0, marker="*", color="black", ms=14, linestyle="none", label="Init")
        ax.set_xlim(x.min(), x.max())
        ax.set_ylim(y.min(), y.max())
        ax.set_xlabel("Log LR Decay (log10 decay exponent)")
        ax.set_ylabel("Log Init LR (log10)")
        ax.set_title(title)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(f"Inverse-time-decay LR schedule, MLP on {dataset_name(df)}{title_suffix}")
    fig.tight_layout()
    return fig


def figures(df: pd.DataFrame, fig_dir: Path) -> dict:
    return {"": draw(df, pd.read_csv(_style.table_path(Path(fig_dir), GRID_CSV)))}


def grid_extremes(grid: pd.DataFrame) -> pd.Series:
    """``m/min``, ``m/argmin/i``, ``m/max``, ``m/argmax/i`` of every metric of the grid table."""
    out = {}
    for metric, sub in grid.groupby("metric"):
        values = sub["value"].to_numpy(float)
        for which, index in (("min", int(np.nanargmin(values))), ("max", int(np.nanargmax(values)))):
            out[f"{metric}/{which}"] = values[index]
            for i in range(2):
                out[f"{metric}/arg{which}/{i}"] = float(sub[f"theta/{i}"].iloc[index])
    return pd.Series(out)


def tables(df: pd.DataFrame, fig_dir: Path) -> dict:
    """The grid's best points and every run's final theta with its fresh-training evaluation."""
    grid = results.source_rows(df, "grid").set_index("metric")["value"]
    if grid.empty:  # a table stored before the grid's summary rows were merged: from grid.csv
        grid = grid_extremes(pd.read_csv(_style.table_path(Path(fig_dir), GRID_CSV)))
    best = pd.DataFrame(
        {
            m: {
                "value": grid[f"{m}/{which}"],
                "log10 init LR": grid[f"{m}/arg{which}/0"] / LN10,
                "log10 decay": grid[f"{m}/arg{which}/1"] / LN10,
            }
            for m, which in (("train_sum_loss", "min"), ("final_val_acc", "max"))
        }
    ).T
    evaluation = results.source_rows(df, "evaluation")
    final = evaluation.pivot_table(index="run_id", columns="metric", values="value")
    runs = results.run_rows(df)
    theta = pd.DataFrame({m: results.final_values(runs, m) for m in ("theta/0", "theta/1")})
    theta.loc["init"] = [final.loc["init", "theta/0"], final.loc["init", "theta/1"]]
    table = pd.DataFrame(
        {"log10 init LR": theta["theta/0"] / LN10, "log10 decay": theta["theta/1"] / LN10}
    ).reindex(final.index)
    for m in ("train_sum_loss", "final_val_acc", "final_test_acc"):
        table[m], table[m + " se"] = final[m], final[m + "_se"]
    return {
        f"dataset: {dataset_name(df)}; grid optimum (mean of fresh trainings)": best,
        "Final theta of every run, fresh full-length trainings (mean, standard error)": table,
    }


def main() -> None:
    _style.cli(figures, tables)


if __name__ == "__main__":
    main()
