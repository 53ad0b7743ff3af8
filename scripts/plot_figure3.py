"""Figure 3: toy 2D regression (meta-learning a linear LR schedule).

    python scripts/plot_figure3.py <merged metrics.csv> <out.png> [--grid grid.csv]
                                   [--start=-4,-4] [--clip]

(a) the meta-objective surface L(theta) from the grid CSV (log colour scale, vmin 5e2,
    vmax 1e4, Purples_r) with the theta trajectories of every run and the start marked;
(b) the full-horizon meta-objective L(theta) against inner iterations (log x).

The grid CSV defaults to ``grid.csv`` (or ``grid.csv.gz``) beside the metrics CSV (the
figure's ``grid`` post-step writes it there).  A stored grid trimmed to its lowest points
(``results/reference``) is drawn as those points.  ``--start`` is the runs' common initial
theta (the task's ``theta_init``; the first logged point is after ``log_every`` outer
steps); a start or trajectory point outside the grid's range is an error unless ``--clip``
is given (then the in-range part is drawn).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _style  # noqa: E402
from _style import plt  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from pes import results  # noqa: E402

ORDER = ("tbptt", "uoro", "rtrl", "es", "pes")
LABELS = {"tbptt": "TBPTT", "rtrl": "RTRL", "uoro": "UORO", "es": "ES", "pes": "PES"}
METRIC = "meta_objective"
GRID_CSV = "grid.csv"


class PlotError(ValueError):
    """Input the figure cannot be drawn from."""


def runs_in_order(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(run_id, estimator) pairs of the runs, in the paper's legend order."""
    pairs = results.run_rows(df)[["run_id", "estimator"]].drop_duplicates().itertuples(index=False)
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(((r, e) for r, e in pairs), key=lambda p: (rank.get(p[1], len(ORDER)), p[0]))


def trajectories(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """run_id -> (num_logs, 2) theta trajectory from the theta/0, theta/1 metrics."""
    t0, t1 = results.metric_table(df, "theta/0"), results.metric_table(df, "theta/1")
    return {run: np.stack([t0[run].to_numpy(), t1[run].to_numpy()], axis=-1) for run in t0.columns}


def check_in_range(name: str, points: np.ndarray, axes: list[np.ndarray], clip: bool) -> None:
    lo = np.array([a[0] for a in axes])
    hi = np.array([a[-1] for a in axes])
    finite = np.all(np.isfinite(points), axis=-1)
    outside = finite & np.any((points < lo) | (points > hi), axis=-1)
    if outside.any() and not clip:
        first = points[np.argmax(outside)]
        raise PlotError(
            f"{name}: theta={tuple(round(float(v), 4) for v in first)} lies outside the grid range "
            f"theta0 in [{lo[0]}, {hi[0]}], theta1 in [{lo[1]}, {hi[1]}]; widen grid.low/grid.high "
            "or pass --clip to draw only the in-range part"
        )


def load(metrics_csv: str | Path, grid_csv: str | Path | None):
    """(merged table, grid axes, grid values) from the metrics CSV and the grid CSV."""
    df = _style.read(metrics_csv)
    grid_csv = Path(grid_csv) if grid_csv else _style.table_path(Path(metrics_csv).parent, GRID_CSV)
    return (df, *load_grid(grid_csv))


def load_grid(grid_csv: Path):
    """(axes, values) of a full grid; (None, (points, values)) of a grid trimmed to its lowest points."""
    if not grid_csv.exists():
        raise PlotError(
            f"grid CSV {grid_csv} does not exist; run `python -m experiments.reproduce figure=figure3`"
        )
    return load_grid_table(pd.read_csv(grid_csv), str(grid_csv))


def load_grid_table(table: pd.DataFrame, name: str = "the grid table"):
    """`load_grid` on a table already read."""
    table = results.validate_grid(table)
    dim = len(table.columns) - 3
    if dim != 2:
        raise PlotError(f"{name}: a {dim}-dimensional grid; figure 3 needs 2 dimensions")
    try:
        return results.grid_array(table)
    except results.SchemaError as err:
        if "not a full regular grid" not in str(err):
            raise
        return None, (table[["theta/0", "theta/1"]].to_numpy(float), table["value"].to_numpy(float))


def plot(df: pd.DataFrame, axes: list[np.ndarray], values: np.ndarray, start=(-4.0, -4.0), clip=False):
    """Draw both panels from the runs' rows; returns the matplotlib figure."""
    df = results.run_rows(df)
    if METRIC not in set(df["metric"]):
        raise PlotError(f"no '{METRIC}' rows of runs; is this a figure-3 (toy_regression) table?")
    start = np.asarray(start, dtype=float)
    paths = trajectories(df)
    if axes is not None:
        check_in_range("start", start[None], axes, clip=False)
    for run, path in paths.items():
        if axes is not None:
            check_in_range(f"run {run}", path, axes, clip)
        if np.linalg.norm(path[0] - start) > 1.0:
            raise PlotError(
                f"run {run} starts at {tuple(np.round(path[0], 3))}, "
                f"far from --start={tuple(start)}; "
                "pass the runs' theta_init as --start"
            )
    fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(12, 5))

    norm = LogNorm(vmin=5e2, vmax=1e4)
    if axes is not None:
        mesh = ax_a.pcolormesh(
            axes[0], axes[1], values.T, norm=norm, cmap="Purples_r", shading="nearest", rasterized=True
        )
    else:  # a stored grid trimmed to its lowest points: those points
        points, kept = values
        mesh = ax_a.scatter(
            points[:, 0], points[:, 1], c=kept, s=4, norm=norm, cmap="Purples_r", rasterized=True
        )
    fig.colorbar(mesh, ax=ax_a, label="Meta Objective L(θ)")
    for run, est in runs_in_order(df):
        path = np.concatenate([start[None], paths[run]])
        st = _style.style(est)
        ax_a.plot(
            path[:, 0],
            path[:, 1],
            color=st["color"],
            linestyle="-",
            linewidth=2,
            label=LABELS.get(est, est),
        )
        ax_a.plot(path[-1, 0], path[-1, 1], "o", color=st["color"], markersize=5)
    ax_a.plot(
        *start,
        marker="*",
        color="gold",
        markeredgecolor="black",
        markersize=16,
        linestyle="none",
        label="start",
        zorder=5,
    )
    ax_a.set_xlabel("Initial Log-LR")
    ax_a.set_ylabel("Final Log-LR")
    if axes is not None:
        ax_a.set_xlim(axes[0][0], axes[0][-1])
        ax_a.set_ylim(axes[1][0], axes[1][-1])
        ax_a.set_title("(a) Meta-objective surface and θ trajectories")
    else:
        ax_a.set_title(f"(a) θ trajectories over the {len(values[1])} lowest grid points (stored)")
    ax_a.legend(loc="upper left", fontsize=9)

    sub = df[df["metric"] == METRIC]
    for run, est in runs_in_order(df):
        curve = sub[sub["run_id"] == run].groupby("inner_steps")["value"].mean()
        ax_b.plot(curve.index, curve.values, label=LABELS.get(est, est), **_style.style(est))
    ax_b.set_xscale("log")
    ax_b.set_yticks([500, 1000, 1500, 2000, 2500])
    ax_b.set_xlabel("Inner Iterations")
    ax_b.set_ylabel("Meta Objective")
    ax_b.set_title("(b) Meta-objective L(θ) during meta-training")
    ax_b.legend(fontsize=9)
    ax_b.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def figures(df: pd.DataFrame, fig_dir: Path) -> dict:
    return {"": plot(df, *load_grid(_style.table_path(Path(fig_dir), GRID_CSV)))}


def grid_summary(table: pd.DataFrame, start=(-4.0, -4.0)) -> pd.Series:
    """The grid step's summary rows from a grid table: minimum, its theta, and the value at
    the grid point nearest ``start`` (NaN when a trimmed grid does not hold that point)."""
    sub = table[table["metric"] == METRIC]
    points = sub[["theta/0", "theta/1"]].to_numpy(float)
    values = sub["value"].to_numpy(float)
    best = int(np.nanargmin(values))
    out = {f"{METRIC}/min": values[best], f"{METRIC}/argmin/0": points[best, 0]}
    out[f"{METRIC}/argmin/1"] = points[best, 1]
    axes, _ = load_grid_table(table)
    nearest = int(np.argmin(np.sum((points - np.asarray(start)) ** 2, axis=1)))
    out[f"{METRIC}/at_init"] = values[nearest] if axes is not None else float("nan")
    return pd.Series(out)


def tables(df: pd.DataFrame, fig_dir: Path) -> dict:
    """The grid's extremes (rows of the grid post-step) and the runs' final values."""
    if results.SOURCE in df.columns and (df[results.SOURCE] == "grid").any():
        grid = results.source_rows(df, "grid").set_index("metric")["value"]
    else:  # a table stored without the grid's summary rows: from the grid table itself
        grid = grid_summary(pd.read_csv(_style.table_path(Path(fig_dir), GRID_CSV)))
    surface = pd.Series(
        {
            "minimum L": grid[f"{METRIC}/min"],
            "at theta0": grid[f"{METRIC}/argmin/0"],
            "at theta1": grid[f"{METRIC}/argmin/1"],
            "L at the grid point nearest the start": grid[f"{METRIC}/at_init"],
        }
    )
    runs = results.run_rows(df)
    final = pd.DataFrame({m: results.final_values(runs, m) for m in (METRIC, "theta/0", "theta/1")})
    return {
        "Meta-loss surface (grid)": surface.to_frame("value"),
        "Final values per method": final.sort_values(METRIC),
    }


def parse_start(text: str) -> tuple[float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"--start={text!r} is invalid; allowed: two numbers 'theta0,theta1'")
    return values


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics_csv")
    parser.add_argument("out_png")
    parser.add_argument("--grid", default=None, help="grid CSV (default: grid.csv beside metrics_csv)")
    parser.add_argument(
        "--start", type=parse_start, default=(-4.0, -4.0), help="initial theta, 'theta0,theta1'"
    )
    parser.add_argument("--clip", action="store_true", help="draw trajectories that leave the grid range")
    args = parser.parse_args(argv)
    try:
        df, axes, values = load(args.metrics_csv, args.grid)
        fig = plot(df, axes, values, start=args.start, clip=args.clip)
    except (PlotError, results.SchemaError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    _style.save(fig, args.out_png)
    print(args.out_png)


if __name__ == "__main__":
    main()
