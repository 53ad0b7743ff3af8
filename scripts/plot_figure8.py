"""Figure 8: Swimmer reward vs total training environment steps.

    python scripts/plot_figure8.py results/quick/figure8/metrics.csv results/quick/figures/figure8.png

Reads only the merged CSV.  One curve per method (run id without its ``-seed<s>``
suffix): mean evaluation return over seeds, with a +-1 std band, against ``env_steps``
(training steps only), truncated to the shortest seed as in the paper's plot script.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _style  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from pes import results  # noqa: E402

METHODS = {  # base run id -> (label, style)
    "es-k1000": ("ES K=1000", dict(color=_style.COLORS["es"], linestyle="--", linewidth=1.5)),
    "es-k100": ("ES K=100", dict(color=_style.COLORS["es"], linestyle=":", linewidth=1.8)),
    "pes-k100": ("PES K=100", dict(color=_style.COLORS["pes"], linestyle="-", linewidth=2.5)),
    "ars": ("ARS (V1-t)", dict(color=_style.COLORS["ars"], linestyle="-", linewidth=1.5)),
    "openai-es": ("OpenAI-ES", dict(color=_style.COLORS["openai_es"], linestyle="-", linewidth=1.5)),
}
METRIC = "eval_return"
X_METRIC = "env_steps"


def method_of(run_id: str) -> str:
    return re.sub(r"-seed\d+$", "", run_id)


def curves(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """method -> DataFrame(env_steps, mean, std, n_seeds), truncated to the shortest seed."""
    runs = results.run_rows(df)
    sub = runs[runs["metric"].isin([METRIC, X_METRIC])]
    wide = sub.pivot_table(
        index=["run_id", "seed", "outer_step"], columns="metric", values="value"
    ).reset_index()
    if METRIC not in wide or X_METRIC not in wide:
        raise SystemExit(f"figure 8 needs metrics {METRIC!r} and {X_METRIC!r} in the CSV")
    wide["method"] = wide["run_id"].map(method_of)
    out = {}
    for method, g in wide.groupby("method", sort=False):
        table = g.pivot_table(index="outer_step", columns="seed", values=METRIC).dropna()
        steps = g.groupby("outer_step")[X_METRIC].first().loc[table.index]
        out[method] = pd.DataFrame(
            {
                "env_steps": steps.to_numpy(),
                "mean": table.mean(axis=1).to_numpy(),
                "std": table.std(axis=1, ddof=0).to_numpy(),
                "n_seeds": table.shape[1],
            }
        )
    return out


def plot(df: pd.DataFrame, ax=None):
    ax = ax or plt.gca()
    data = curves(df)
    order = [m for m in METHODS if m in data] + [m for m in data if m not in METHODS]
    for method in order:
        c = data[method]
        label, style = METHODS.get(method, (method, {}))
        mean = c["mean"].to_numpy()
        ax.plot(c["env_steps"], mean, label=f"{label} ({int(c['n_seeds'].iloc[0])} seeds)", **style)
        ax.fill_between(
            c["env_steps"], mean - c["std"], mean + c["std"], color=style.get("color"), alpha=0.15
        )
    ax.set_xlabel("Total environment steps (training)")
    ax.set_ylabel("Evaluation reward")
    ax.set_title("Swimmer-v5 (MuJoCo), linear policy")
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return ax


def figures(df: pd.DataFrame, fig_dir=None) -> dict:
    fig, ax = plt.subplots(figsize=(6, 4))
    plot(df, ax)
    return {"": fig}


def tables(df: pd.DataFrame, fig_dir=None) -> dict:
    """Final and best evaluation reward per method (mean over seeds) and the training steps used."""
    summary = {
        m: {
            "env_steps": int(c["env_steps"].iloc[-1]),
            "final_mean": float(c["mean"].iloc[-1]),
            "final_std": float(c["std"].iloc[-1]),
            "best_mean": float(c["mean"].max()),
            "seeds": int(c["n_seeds"].iloc[0]),
        }
        for m, c in curves(df).items()
    }
    return {"Evaluation reward per method": pd.DataFrame(summary).T}


def main() -> None:
    _style.cli(figures, tables)


if __name__ == "__main__":
    main()
