"""The numbers claims take from the paper's own code, recomputed from its committed outcomes.

A claim whose source is "the paper's own code run here: results/reference/official/<figure>/
outcomes.csv, ..." states a threshold derived from that file (docs/claims.md).  These tests derive
it again from the file, so the YAML cannot drift from the CSV; they skip, saying why, while the
file is not committed.  The rule of each derivation is the one the claim's source states.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest

from experiments import claims, figures

ROOT = Path(__file__).resolve().parent.parent
OFFICIAL = ROOT / "results" / "reference" / "official"


def official(figure: str) -> pd.DataFrame:
    path = OFFICIAL / figure / "outcomes.csv"
    if not path.exists():
        pytest.skip(f"{path.relative_to(ROOT)} is not committed: the paper's own code has no stored outcomes")
    df = pd.read_csv(path)
    assert {"figure", "source_repo", "commit", "run", "estimator", "seed", "metric", "value"} <= set(
        df.columns
    )
    return df


def per_run(df: pd.DataFrame, estimator: str) -> pd.DataFrame:
    """One row per finished official run (pooled summaries and runs stopped early, ``*-partial``,
    left out), one column per metric."""
    run = df["run"].astype(str)
    rows = df[(df["estimator"] == estimator) & (run != "pooled") & ~run.str.endswith("-partial")]
    if rows.empty:
        pytest.skip(f"the official outcomes hold no finished {estimator} run yet")
    return rows.pivot_table(index=["run", "seed"], columns="metric", values="value")


def claim(figure: str, cid: str) -> dict:
    fig = figures.load(figure)
    (c,) = [c for c in claims.validate(fig.get("claims"), fig) if c["id"] == cid]
    return c


def test_figure2_crossing_iteration_is_the_official_codes_latest():
    """pes-by-2000: the latest first iteration at which the official code's PES runs reach a loss
    <= 1e-10, rounded up to the quick profile's logging interval (10)."""
    runs = per_run(official("figure2"), "pes")
    first = runs["first_iter_loss_le_1e-10"]
    assert first.notna().all(), first
    want = int(math.ceil(float(first.max()) / 10.0) * 10)
    c = claim("figure2", "pes-by-2000")
    assert c["check"]["max"] == want, (
        f"configs/figure/figure2.yaml pes-by-2000 max {c['check']['max']}, the official outcomes give {want} "
        f"(first crossings {sorted(first.astype(int))}): update the claim and docs/claims.md's change log"
    )


def test_figure9_pes_tolerance_is_the_official_distance_plus_its_spread():
    """pes-near-optimum: tolerance = the largest, over the official code's PES runs, of
    |mean theta over the last 10 %| - theta*| + the standard deviation of theta over those
    iterations, rounded to 3 decimals."""
    runs = per_run(official("figure9"), "pes")
    tol = float((runs["abs_err_last10_mean"] + runs["theta_last10_std"]).max())
    c = claim("figure9", "pes-near-optimum")
    assert c["check"]["atol"] == pytest.approx(round(tol, 3), abs=5e-4), (
        f"configs/figure/figure9.yaml pes-near-optimum atol {c['check']['atol']} but the official outcomes "
        f"give {tol:.4f}: update the claim (its rule is unchanged) and the change log in docs/claims.md"
    )
    assert f"{round(tol, 3):.3f}".rstrip("0") in " ".join(c["source"].split())


def test_figure9_es_bound_lies_below_every_official_truncated_es_run():
    """es-short-horizon-bias: every official truncated-ES run ends farther from theta* than the bound."""
    runs = per_run(official("figure9"), "es")
    bound = claim("figure9", "es-short-horizon-bias")["check"]["min"]
    assert float(runs["abs_err_final"].min()) >= bound, runs["abs_err_final"].describe()


def test_figure10_finding_quotes_the_successor_codes_ratio_at_w1000():
    """lorenz-nres-variance-every-w's finding quotes NRES/PES and its interval at W = 1000."""
    df = official("figure10")
    row = df[(df["run"] == "lorenz-variance-w1000") & (df["estimator"] == "nres_vs_pes")]
    got = {
        m: float(row[row.metric == m]["value"].iloc[0])
        for m in ("variance_ratio", "variance_ratio_lo", "variance_ratio_hi")
    }
    text = " ".join(claim("figure10", "lorenz-nres-variance-every-w")["finding"].split())
    m = re.search(r"gives ([\d.]+) \[([\d.]+), ([\d.]+)\]", text)
    assert m, text
    quoted = [float(x) for x in m.groups()]
    want = [got["variance_ratio"], got["variance_ratio_lo"], got["variance_ratio_hi"]]
    assert quoted == pytest.approx(want, abs=1.5e-3), (quoted, want)


@pytest.mark.parametrize("name", figures.figure_names())
def test_sources_that_cite_the_official_store_name_a_file_of_it(name):
    """A source citing results/reference/official/... names an outcomes.csv of a figure folder."""
    fig = figures.load(name)
    for c in claims.validate(fig.get("claims"), fig):
        for ref in re.findall(r"results/reference/official/[^\s,;:)]+", " ".join(c["source"].split())):
            assert re.fullmatch(r"results/reference/official/figure\d+/(outcomes|trajectories)\.csv", ref), (
                c["id"],
                ref,
            )
