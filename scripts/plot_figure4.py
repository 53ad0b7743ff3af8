"""Figure 4: normalised variance of PES vs number of unrolls (char-level PTB LSTM).

    python scripts/plot_figure4.py <merged metrics.csv> <out.png>

Writes ``out.png``/``.pdf`` (the paper's panel: normalised variance against the ES ground
truth vs T/K, log-log, one curve per scenario at the largest N) and
``<out>_per_n.png``/``.pdf`` (appendix: one panel per scenario, one curve per N, against
the autodiff gradient so that no ground-truth floor hides the 1/N scaling), and prints
the summary table.  Reads only the CSV (the ``variance`` post-step's rows, described in
experiments/steps/variance.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _style  # noqa: E402
from _style import plt  # noqa: E402

SCENARIOS = {"real": "Real Seq.", "random": "Random Seq.", "repeat": "Repeated Seq."}
COLORS = {"real": "#1f4e9c", "random": "#d62728", "repeat": "#2ca02c"}
PAPER = "normalized_variance"  # against the full-sequence ES ground truth (paper's y-axis)
EXACT = "normalized_variance_exact"  # against the autodiff gradient


def scenarios(df: pd.DataFrame) -> list[str]:
    found = {m.split("/", 1)[1] for m in df["metric"].unique() if m.startswith(PAPER + "/")}
    return [s for s in SCENARIOS if s in found] + sorted(found - set(SCENARIOS))


def curves(df: pd.DataFrame, metric: str = PAPER) -> pd.DataFrame:
    """Long table: scenario, num_particles, trunc_len, unrolls, value, se."""
    out = []
    for s in scenarios(df):
        val = df[df["metric"] == f"{metric}/{s}"]
        se = df[df["metric"] == f"{metric}_se/{s}"].set_index("run_id")["value"]
        for row in val.itertuples():
            out.append(
                dict(
                    scenario=s,
                    num_particles=int(row.num_particles),
                    trunc_len=int(row.trunc_len),
                    unrolls=int(row.outer_step),
                    value=row.value,
                    se=se.get(row.run_id, np.nan),
                )
            )
    return pd.DataFrame(out).sort_values(["scenario", "num_particles", "unrolls"]).reset_index(drop=True)


def scalar(df: pd.DataFrame, name: str) -> float:
    sub = df[df["metric"] == name]
    return float(sub["value"].iloc[0]) if len(sub) else float("nan")


def loglog_slope(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2:
        return float("nan")
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per scenario: the numbers the issue's "must show" list asks for."""
    paper, exact = curves(df, PAPER), curves(df, EXACT)
    main_n = int(paper["num_particles"].max())
    rows = []
    for s in scenarios(df):
        p = paper[(paper.scenario == s) & (paper.num_particles == main_n)].sort_values("unrolls")
        e = exact[(exact.scenario == s) & (exact.num_particles == main_n)].sort_values("unrolls")
        one, finest = p.iloc[0], p.iloc[-1]
        upper = p[p.unrolls >= np.sqrt(p.unrolls.max())] if p.unrolls.max() > 1 else p
        at_finest = exact[(exact.scenario == s) & (exact.unrolls == exact.unrolls.max())]
        at_one = exact[(exact.scenario == s) & (exact.unrolls == 1)]
        rows.append(
            {
                "scenario": s,
                "N": main_n,
                "one_unroll": one.value,
                "one_unroll_se": one.se,
                "one_unroll_predicted": scalar(
                    df[df.run_id == f"{s}-n{main_n}-k{one.trunc_len}"],
                    f"es_variance_analytic_vs_ground_truth/{s}",
                ),
                "one_unroll_exact": e.iloc[0].value,
                "one_unroll_exact_predicted": scalar(
                    df[df.run_id == f"{s}-n{main_n}-k{one.trunc_len}"], f"es_variance_analytic/{s}"
                ),
                "finest_unrolls": int(finest.unrolls),
                "finest": finest.value,
                "finest_se": finest.se,
                "finest_exact": e.iloc[-1].value,
                "slope_upper_half": loglog_slope(upper.unrolls, upper.value),
                "slope_upper_half_exact": loglog_slope(
                    e[e.unrolls.isin(upper.unrolls)].unrolls, e[e.unrolls.isin(upper.unrolls)].value
                ),
                "n_slope_finest": loglog_slope(at_finest.num_particles, at_finest.value),
                "n_slope_one_unroll": loglog_slope(at_one.num_particles, at_one.value),
                "ground_truth_floor": scalar(df, f"ground_truth_noise_floor/{s}"),
                "ground_truth_floor_analytic": scalar(df, f"ground_truth_noise_floor_analytic/{s}"),
                "ground_truth_error_exact": scalar(df, f"ground_truth_error_exact/{s}"),
            }
        )
    return pd.DataFrame(rows).set_index("scenario")


def draw_main(ax, df: pd.DataFrame) -> None:
    paper = curves(df, PAPER)
    main_n = int(paper["num_particles"].max())
    for s in scenarios(df):
        c = paper[(paper.scenario == s) & (paper.num_particles == main_n)]
        ax.errorbar(
            c.unrolls,
            c.value,
            yerr=c.se,
            color=COLORS.get(s),
            marker="o",
            markersize=4,
            linewidth=2,
            capsize=2,
            label=SCENARIOS.get(s, s),
        )
    # An estimator with no variance would still score f / (1 + f) against a ground truth
    # of relative variance f: the floor below which no curve can appear.
    floors = [scalar(df, f"ground_truth_noise_floor_analytic/{s}") for s in scenarios(df)]
    if floors and np.isfinite(floors[0]):
        bound = floors[0] / (1 + floors[0])
        ax.axhline(
            bound,
            color="0.5",
            linestyle=":",
            linewidth=1,
            label=f"ground truth's own noise: f/(1+f) = {bound:.2g}",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("# Unrolls (T / K)")
    ax.set_ylabel(r"Variance  $E\|\hat g_{PES}-\hat g_{ES}\|^2 / \|\hat g_{ES}\|^2$")
    ax.set_title(f"PES variance, char-level PTB LSTM (N={main_n})")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)


def draw_per_n(axes, df: pd.DataFrame) -> None:
    exact = curves(df, EXACT)
    counts = sorted(exact["num_particles"].unique())
    shades = plt.cm.viridis(np.linspace(0.0, 0.85, len(counts)))
    for ax, s in zip(axes, scenarios(df), strict=True):
        for n, color in zip(counts, shades, strict=True):
            c = exact[(exact.scenario == s) & (exact.num_particles == n)]
            ax.errorbar(
                c.unrolls,
                c.value,
                yerr=c.se,
                color=color,
                marker="o",
                markersize=3,
                capsize=2,
                label=f"N={n}",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(SCENARIOS.get(s, s))
        ax.set_xlabel("# Unrolls (T / K)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel(r"Variance  $E\|\hat g_{PES}-\nabla L\|^2 / \|\nabla L\|^2$")
    axes[0].legend(fontsize=8)


def figures(df: pd.DataFrame, fig_dir=None) -> dict:
    """The main panel and the appendix's per-N panels (suffix ``_per_n``)."""
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    draw_main(ax, df)
    n_scen = len(scenarios(df))
    per_n, axes = plt.subplots(1, n_scen, figsize=(4.2 * n_scen, 3.8), squeeze=False)
    draw_per_n(list(axes[0]), df)
    return {"": fig, "_per_n": per_n}


def tables(df: pd.DataFrame, fig_dir=None) -> dict:
    main_n = curves(df)["num_particles"].max()
    at_main_n = curves(df)[lambda c: c.num_particles == main_n]
    return {
        "Summary per scenario": summary(df).T,
        f"Normalised variance at N={main_n} (rows: unrolls T/K)": at_main_n.pivot_table(
            index="unrolls", columns="scenario", values="value"
        ),
    }


def main() -> None:
    _style.cli(figures, tables)


if __name__ == "__main__":
    main()
