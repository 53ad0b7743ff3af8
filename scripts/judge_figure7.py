"""Figure 7's judging rule (docs/figures/figure7.md), computed from a figure's metrics.csv.

    python scripts/judge_figure7.py results/quick/figure7/metrics.csv [--last 4] [--margin 0.05]
        [--out judged.json]

Score of a run = mean of ``meta_loss_eval`` over its last ``--last`` evaluations.  Claims:
C1 mean(PES scores) <= mean(truncated-ES scores) - margin; C2 max(PES) < min(truncated ES);
C3 (informational) range(PES) < range(truncated ES).  Also prints per-seed scores, paired
differences and a one-sided Mann-Whitney U p-value.  Reads results only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

METHODS = ("pes", "es")


def scores(df: pd.DataFrame, last: int) -> pd.DataFrame:
    """(estimator, seed) -> score: mean meta_loss_eval over each run's last ``last`` evaluations."""
    rows = df[(df["metric"] == "meta_loss_eval") & df["estimator"].isin(METHODS)]
    if "source" in rows.columns:
        rows = rows[rows["source"] == "run"]
    rows = rows[rows["run_id"].str.match(r"^(pes|tes)-s\d+$")]
    out = []
    for (est, seed, run), g in rows.groupby(["estimator", "seed", "run_id"]):
        g = g.sort_values("outer_step")
        tail = g.tail(last)
        out.append(
            dict(estimator=est, seed=int(seed), run_id=run, score=float(tail["value"].mean()),
                 last_steps=" ".join(str(int(s)) for s in tail["outer_step"]),
                 final=float(g["value"].iloc[-1]))
        )
    return pd.DataFrame(out)


def judge(table: pd.DataFrame, margin: float) -> dict:
    p = table[table.estimator == "pes"].set_index("seed")["score"].sort_index()
    e = table[table.estimator == "es"].set_index("seed")["score"].sort_index()
    paired = (p - e).dropna()
    out = {
        "seeds_pes": [int(s) for s in p.index],
        "seeds_es": [int(s) for s in e.index],
        "pes_scores": [round(float(v), 4) for v in p],
        "es_scores": [round(float(v), 4) for v in e],
        "pes_mean": float(p.mean()), "es_mean": float(e.mean()),
        "pes_sd": float(p.std(ddof=1)), "es_sd": float(e.std(ddof=1)),
        "pes_spread": float(p.max() - p.min()), "es_spread": float(e.max() - e.min()),
        "paired_diff": [round(float(v), 4) for v in paired],
        "paired_pes_lower": int((paired < 0).sum()), "paired_n": int(len(paired)),
        "cross_pairs_ordered": int(sum(float(a) < float(b) for a in p for b in e)),
        "cross_pairs": int(len(p) * len(e)),
    }
    out["C1_mean_gap"] = out["es_mean"] - out["pes_mean"]
    out["C1"] = bool(out["pes_mean"] <= out["es_mean"] - margin)
    out["C2"] = bool(p.max() < e.min())
    out["C3_informational"] = bool(out["pes_spread"] < out["es_spread"])
    try:
        from scipy.stats import mannwhitneyu

        out["mannwhitney_p_one_sided"] = float(mannwhitneyu(p, e, alternative="less").pvalue)
    except ImportError:  # scipy is optional here
        out["mannwhitney_p_one_sided"] = None
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", help="a figure-7 metrics.csv (merged) or a run's metrics.csv list")
    parser.add_argument("more", nargs="*", help="more metrics.csv files to concatenate (e.g. runs)")
    parser.add_argument("--last", type=int, default=4)
    parser.add_argument("--margin", type=float, default=0.05)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    frames = [pd.read_csv(p) for p in [args.csv, *args.more]]
    table = scores(pd.concat(frames, ignore_index=True), args.last)
    if table.empty or set(table.estimator) != set(METHODS):
        msg = f"error: {args.csv} has no pes and es meta_loss_eval runs (ids pes-s<N>, tes-s<N>)"
        print(msg, file=sys.stderr)
        return 2
    print(table.sort_values(["estimator", "seed"]).to_string(index=False))
    verdict = judge(table, args.margin)
    for k, v in verdict.items():
        print(f"{k}: {v}")
    if args.out:
        Path(args.out).write_text(json.dumps(dict(verdict, last=args.last, margin=args.margin), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
