"""Figure 10: PES, NRES, GPES-K and truncated ES on the NRES paper's tasks.

    python scripts/plot_figure10.py results/quick/figure10/metrics.csv results/quick/figures/figure10.png

Reads only the merged CSV.  One row of panels per task (Lorenz, learned optimizer, Swimmer):

(a) variance of one truncation's gradient estimate (relative to the squared norm of the
    whole-episode reference's share of a truncation) against the truncation length W, per
    estimator; solid = step-unlocked pairs, dashed = lockstep, dotted = step-unlocked pairs
    with their own random keys; bars = 1 standard error over chains;
(a') the GPES-K family at one W against its noise-block length (PES at the left end, NRES
    at the right);
(b)  the task's objective against inner steps and against wall-clock seconds (from the
    ``timing`` post-step: every run's step timed side by side in one process), mean over
    seeds with the min-max band; training runs use step-unlocked pairs unless labelled lockstep.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _style  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pes import results  # noqa: E402

TASKS = {  # label -> (title, objective metric, y label, log y, lower is better)
    "lorenz": ("Lorenz (T=2000)", "test_loss", "test loss", True),
    "lopt": ("Learned optimizer (Fashion-MNIST 8x8)", "meta_loss_eval", "meta-loss", False),
    "swimmer": ("Swimmer-v5 (linear policy)", "eval_return", "evaluation return", False),
}
ESTIMATOR_COLORS = {
    "pes": _style.COLORS.get("pes", "C0"),
    "nres": _style.COLORS.get("nres", "C1"),
    "gpes": "#9467bd",
    "es": _style.COLORS.get("es", "C2"),
}
SETTING_STYLE = {"step_unlocked": "-", "lockstep": "--", "own_keys": ":"}
VAR_RE = re.compile(r"^var-(?P<task>[a-z0-9_]+)-(?P<label>[a-z]+\d*)-(?P<setting>[a-z_]+)-w(?P<w>\d+)$")


def variance_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per variance configuration: task, label, estimator, setting, W, noise_every, values."""
    rows = results.source_rows(df, "truncation_variance") if "source" in df.columns else df
    rows = rows[rows["run_id"].str.match(VAR_RE)]
    if rows.empty:
        return pd.DataFrame()
    wide = rows.pivot_table(index=["run_id", "outer_step"], columns="metric", values="value").reset_index()
    parts = wide["run_id"].str.extract(VAR_RE)
    wide = pd.concat([wide, parts], axis=1)
    wide["w"] = wide["w"].astype(int)
    wide["noise_every"] = wide["outer_step"].astype(int)
    wide["estimator"] = wide["label"].str.replace(r"\d+$", "", regex=True)
    return wide


def run_curves(df: pd.DataFrame, metric: str, x: str) -> dict[str, pd.DataFrame]:
    """base run id -> DataFrame(x, mean, lo, hi, seeds) of ``metric`` against ``x``."""
    runs = df[df["metric"] == metric]
    if "source" in df.columns:
        runs = results.run_rows(df)
        runs = runs[runs["metric"] == metric]
    if runs.empty:
        return {}
    if x in ("inner_steps", "outer_step"):
        data = runs.assign(_x=runs[x])
    else:
        xs = df[df["metric"] == x][["run_id", "seed", "outer_step", "value"]].rename(columns={"value": "_x"})
        data = runs.merge(xs, on=["run_id", "seed", "outer_step"], how="inner")
    data = data.assign(base=data["run_id"].str.replace(r"-seed\d+$", "", regex=True))
    out = {}
    for base, g in data.groupby("base", sort=False):
        table = g.pivot_table(index="outer_step", columns="seed", values="value").dropna()
        xs_ = g.groupby("outer_step")["_x"].mean().loc[table.index]
        out[base] = pd.DataFrame(
            {
                "x": xs_.to_numpy(),
                "mean": table.mean(axis=1).to_numpy(),
                "lo": table.min(axis=1).to_numpy(),
                "hi": table.max(axis=1).to_numpy(),
                "seeds": table.shape[1],
            }
        )
    return out


def _run_style(base: str):
    est = base.split("-")[1] if "-" in base else base
    est = {"tes": "es"}.get(est, est)
    return dict(color=ESTIMATOR_COLORS.get(est, "k"), linestyle="--" if base.endswith("lockstep") else "-")


def _name(base: str) -> str:
    parts = base.split("-")[1:]
    name = {"pes": "PES", "nres": "NRES", "gpes": "GPES", "tes": "truncated ES"}.get(parts[0], parts[0])
    return name + (" (lockstep)" if parts[-1] == "lockstep" else "")


def _variance_curve(ax, g: pd.DataFrame, x: str, setting: str, color, name: str = "") -> None:
    """One setting's relative variance (with its standard error where given) against `x`,
    labelled "<name> <setting>" (the setting alone without a name)."""
    g = g.sort_values(x)
    label = f"{name} {setting.replace('_', '-')}" if name else setting.replace("_", "-")
    ax.errorbar(
        g[x],
        g["variance"],
        yerr=g.get("variance_se"),
        color=color,
        linestyle=SETTING_STYLE.get(setting, "-"),
        marker="o",
        markersize=3,
        label=label,
    )


def figures(df: pd.DataFrame, fig_dir=None) -> dict:
    var = variance_table(df)
    present = [
        t
        for t in TASKS
        if (not var.empty and (var["task"] == t).any()) or df["run_id"].str.startswith(f"{t}-").any()
    ]
    if not present:
        raise SystemExit("figure 10 needs rows of the lorenz, lopt or swimmer runs or variance step")
    fig, axes = plt.subplots(len(present), 4, figsize=(18, 3.8 * len(present)), squeeze=False)
    for row, task in zip(axes, present):
        title, metric, ylabel, logy = TASKS[task]
        ax = row[0]
        tv = var[(var["task"] == task)] if not var.empty else var
        if not tv.empty:
            ws = tv[~tv["label"].str.match(r"gpes\d+") | tv["noise_every"].eq(tv["w"] * _factor(tv))]
            for (label, setting), g in ws.groupby(["label", "setting"]):
                est = re.sub(r"\d+$", "", label)
                if est == "gpes":
                    continue
                _variance_curve(ax, g, "w", setting, ESTIMATOR_COLORS[est], _est_name(est))
            gp = tv[tv["estimator"] == "gpes"]
            factor = _factor(tv)
            gpw = gp[gp["noise_every"] == factor * gp["w"]]
            for setting, g in gpw.groupby("setting"):
                _variance_curve(ax, g, "w", setting, ESTIMATOR_COLORS["gpes"], f"GPES-{factor}W")
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel("truncation length W")
        ax.set_ylabel("relative variance of one truncation's estimate")
        ax.set_title(f"{title}\n(a) variance vs W")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
        ax = row[1]
        if not tv.empty:
            sweep_w = _sweep_w(tv)
            if sweep_w is not None:
                sw = tv[(tv["w"] == sweep_w) & tv["estimator"].isin(["pes", "gpes", "nres"])]
                for setting, g in sw.groupby("setting"):
                    _variance_curve(ax, g, "noise_every", setting, "k")
                ax.set_xscale("log")
                ax.set_yscale("log")
                ax.set_title(f"(a') GPES-K at W={sweep_w}: PES (left) to NRES (right)")
        ax.set_xlabel("noise block length K (steps)")
        ax.set_ylabel("relative variance")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        for ax, x, xlabel in (
            (row[2], "inner_steps", "inner steps per trajectory"),
            (row[3], "wall_clock_s", "wall-clock seconds (timed side by side)"),
        ):
            curves = run_curves(df[df["run_id"].str.startswith(f"{task}-") | (df["metric"] == x)], metric, x)
            curves = {b: c for b, c in curves.items() if b.startswith(f"{task}-")}
            for base, c in curves.items():
                style = _run_style(base)
                ax.plot(c["x"], c["mean"], label=f"{_name(base)} ({int(c['seeds'].iloc[0])} seeds)", **style)
                ax.fill_between(c["x"], c["lo"], c["hi"], color=style["color"], alpha=0.12)
            if logy and curves:
                ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_title("(b) objective vs " + ("inner steps" if x == "inner_steps" else "wall-clock"))
            ax.grid(alpha=0.3)
            if curves:
                ax.legend(fontsize=7)
    fig.tight_layout()
    return {"": fig}


def _est_name(est: str) -> str:
    return {"pes": "PES", "nres": "NRES", "es": "truncated ES", "gpes": "GPES"}[est]


def _factor(tv: pd.DataFrame) -> int:
    """The W sweep's GPES factor (noise_every / W shared by the most GPES rows)."""
    gp = tv[tv["estimator"] == "gpes"]
    if gp.empty:
        return 0
    return int((gp["noise_every"] // gp["w"]).mode().iloc[0])


def _sweep_w(tv: pd.DataFrame):
    """The W at which the most distinct noise-block lengths were measured."""
    counts = tv.groupby("w")["noise_every"].nunique()
    return int(counts.idxmax()) if counts.max() > 2 else None


def tables(df: pd.DataFrame, fig_dir=None) -> dict:
    var = variance_table(df)
    out = {}
    if not var.empty:
        cols = [
            c
            for c in (
                "task",
                "label",
                "setting",
                "w",
                "noise_every",
                "variance",
                "variance_se",
                "variance_vs_pes",
                "variance_vs_pes_hi",
                "bias2",
            )
            if c in var.columns
        ]
        out["Per-truncation variance"] = var[cols].sort_values(["task", "setting", "w", "noise_every"])
    summary = {}
    for task, (_, metric, _, _) in TASKS.items():
        for base, c in run_curves(df, metric, "inner_steps").items():
            if base.startswith(f"{task}-"):
                summary[base] = {
                    "metric": metric,
                    "final_mean": float(c["mean"].iloc[-1]),
                    "final_min": float(c["lo"].iloc[-1]),
                    "final_max": float(c["hi"].iloc[-1]),
                    "seeds": int(c["seeds"].iloc[0]),
                    "inner_steps": int(c["x"].iloc[-1]),
                }
    if summary:
        out["Final objective per run (mean, min, max over seeds)"] = pd.DataFrame(summary).T
    return out


def main() -> None:
    _style.cli(figures, tables)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
