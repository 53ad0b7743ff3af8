"""Figure 7: meta-training a learned optimizer, PES vs truncated ES (+ tuned Adam).

python scripts/plot_figure7.py results/quick/figure7/metrics.csv results/quick/figures/figure7.png

Left: meta-loss of the current learned optimizer (mean clipped inner training loss over
fresh T-step inner runs from fixed seeds) vs meta-training iterations; one line per method,
the mean over LOpt initialisations with a min-max band and thin per-seed lines; tuned Adam
as a dashed reference.  Right: inner training curves of the meta-trained LOpts (mean over
seeds), the initial LOpts and Adam with the tuned learning rate.
"""

from __future__ import annotations

import _style
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from pes import results

METHODS = {"pes": "PES", "es": "Truncated ES"}
DATASET_LABELS = {
    "cifar10": "CIFAR-10",
    "fashion_mnist": "Fashion-MNIST (stand-in for CIFAR-10)",
    "mnist": "MNIST (stand-in for CIFAR-10)",
}


def training_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of the meta-training runs (not the post-steps' rows)."""
    return results.run_rows(df)


def tuned_adam(df: pd.DataFrame) -> pd.Series:
    """metric -> value of tuned Adam (the ``adam_baseline`` post-step), empty without it."""
    if results.SOURCE not in df.columns:
        return pd.Series(dtype=float)
    adam = results.source_rows(df, "adam_baseline")
    return adam[(adam["run_id"] == "adam-tuned") & (adam["outer_step"] == 0)].set_index("metric")["value"]


def dataset_label(df: pd.DataFrame) -> str | None:
    names = [m.split("/", 1)[1] for m in tuned_adam(df).index if m.startswith("dataset/")]
    return DATASET_LABELS.get(names[0], names[0]) if names else None


def method_table(df: pd.DataFrame, estimator: str, metric: str = "meta_loss_eval") -> pd.DataFrame:
    """index outer_step, one column per seed."""
    sub = training_runs(df)
    sub = sub[(sub["estimator"] == estimator) & (sub["metric"] == metric)]
    return sub.pivot_table(index="outer_step", columns="seed", values="value", aggfunc="mean")


def final_summary(df: pd.DataFrame, metric: str = "meta_loss_eval") -> pd.DataFrame:
    """Per method: the last evaluation's mean, min, max over seeds and the seed values."""
    out = []
    for est, label in METHODS.items():
        table = method_table(df, est, metric)
        if table.empty:
            continue
        last = table.iloc[-1]
        out.append(
            dict(
                method=label,
                estimator=est,
                outer_step=int(table.index[-1]),
                mean=last.mean(),
                min=last.min(),
                max=last.max(),
                spread=last.max() - last.min(),
                seeds=len(last),
                values=", ".join(f"{v:.3f}" for v in last),
            )
        )
    return pd.DataFrame(out)


def plot_meta_loss(df: pd.DataFrame, ax) -> None:
    for est, label in METHODS.items():
        table = method_table(df, est)
        if table.empty:
            continue
        kw = _style.style(est)
        x = table.index.to_numpy()
        values = table.to_numpy()
        for col in range(values.shape[1]):
            ax.plot(x, values[:, col], color=kw["color"], linewidth=0.7, alpha=0.5)
        ax.fill_between(x, np.nanmin(values, 1), np.nanmax(values, 1), color=kw["color"], alpha=0.15)
        ax.plot(x, np.nanmean(values, 1), label=f"{label} (mean of {values.shape[1]} inits)", **kw)
    adam = tuned_adam(df)
    if "meta_loss_eval" in adam:
        tag = f" (lr {adam['learning_rate']:g})" if "learning_rate" in adam else ""
        ax.axhline(
            adam["meta_loss_eval"], color="#7f7f7f", linestyle="--", linewidth=1.2, label=f"Adam, tuned{tag}"
        )
    # the random LOpt at step 0 sits far above the rest: keep the axis on the trained range
    ml = training_runs(df)
    ml = ml[ml["metric"] == "meta_loss_eval"]
    later, start = ml[ml["outer_step"] > 0]["value"], ml[ml["outer_step"] == 0]["value"]
    if len(later) and len(start) and start.max() > 1.2 * later.max():
        lows = [later.min()] + ([adam["meta_loss_eval"]] if "meta_loss_eval" in adam else [])
        ax.set_ylim(0.95 * min(lows), 1.1 * later.max())
        ax.text(
            0.98,
            0.70,
            f"step 0 (random LOpt): {start.min():.2f}-{start.max():.2f}, off scale",
            transform=ax.transAxes,
            fontsize=7,
            ha="right",
            va="top",
        )
    ax.set_xlabel("Meta-training iterations")
    ax.set_ylabel("Meta-loss (mean clipped train loss over T)")
    ax.legend(fontsize=8, loc="upper right")


def plot_inner_curves(df: pd.DataFrame, ax) -> None:
    curves = df[df["metric"] == "inner_loss"]  # rows of the adam_baseline and inner_curves steps
    if curves.empty:
        ax.text(0.5, 0.5, "no inner curves", ha="center", va="center", transform=ax.transAxes)
        return
    groups = [
        ("init", "Initial LOpt", {"color": "#bbbbbb", "linestyle": "-", "linewidth": 1.5}),
        ("es", "LOpt meta-trained by truncated ES", _style.style("es")),
        ("pes", "LOpt meta-trained by PES", _style.style("pes")),
        ("adam", "Adam, tuned LR", {"color": "#7f7f7f", "linestyle": "--", "linewidth": 1.5}),
    ]
    for est, label, kw in groups:
        sub = curves[curves["estimator"] == est]
        if sub.empty:
            continue
        table = sub.pivot_table(index="inner_steps", columns="run_id", values="value", aggfunc="mean")
        ax.plot(table.index, table.mean(axis=1), label=label, **kw)
    ax.set_xlabel("Inner training step")
    ax.set_ylabel("Clipped training loss")
    ax.set_yscale("log")
    ax.legend(fontsize=8)


def plot(df: pd.DataFrame, axes=None):
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(11.5, 4))
        fig.subplots_adjust(wspace=0.3)
    else:
        fig = axes[0].figure
    plot_meta_loss(df, axes[0])
    plot_inner_curves(df, axes[1])
    data = dataset_label(df)
    axes[0].set_title(
        "Meta-training an MLP learned optimizer" + (f"\n{data}, 8x8 MLP" if data else ""), fontsize=10
    )
    axes[1].set_title("Inner training with the final LOpts vs tuned Adam", fontsize=10)
    return fig


def figures(df: pd.DataFrame, fig_dir=None) -> dict:
    return {"": plot(df)}


def tables(df: pd.DataFrame, fig_dir=None) -> dict:
    summary = final_summary(df)
    out = {"Meta-loss at the last evaluation (mean, range and per-seed values per method)": summary}
    s = summary.set_index("estimator")
    if {"pes", "es"} <= set(s.index):
        gap = s.loc["es", "mean"] - s.loc["pes", "mean"]
        out[
            "Quick-profile expectation (PES mean below truncated-ES mean by >= 0.05, every PES seed lower)"
        ] = pd.DataFrame(
            {
                "mean gap (TES - PES)": [gap],
                "worst PES seed": [s.loc["pes", "max"]],
                "best TES seed": [s.loc["es", "min"]],
                "holds": [bool(gap >= 0.05 and s.loc["pes", "max"] < s.loc["es", "min"])],
            }
        )
    return out


def main() -> None:
    _style.cli(figures, tables)


if __name__ == "__main__":
    main()
