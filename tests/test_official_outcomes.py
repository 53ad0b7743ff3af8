"""The paper's own code's outcomes (results/reference/official/<figure>/): schema, and the summary
rows agree with the trajectories (and with each other) wherever both exist.

These files are the yardstick some claims take their thresholds from, so a summary row that
disagrees with the logged trajectory it was computed from would silently move a threshold."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
OFFICIAL = ROOT / "results" / "reference" / "official"
OUTCOME_COLUMNS = ["figure", "source_repo", "commit", "run", "estimator", "seed", "metric", "value"]
TRAJECTORY_COLUMNS = ["figure", "run", "estimator", "seed", "iteration", "metric", "value"]
REPOS = {"google-research/google-research", "OscarcarLi/Noise-Reuse-Evolution-Strategies"}
FIGURES = sorted(p.name for p in OFFICIAL.iterdir() if p.is_dir()) if OFFICIAL.is_dir() else []
# A "first iteration reaching ..." is empty when the run never reached it.
MAY_BE_EMPTY = re.compile(r"^first_iter_")
# How the logged values were rounded when written (scripts/official_outcomes.py: %.10g, %.8g).
RTOL = 1e-6


def _outcomes(fig: str) -> pd.DataFrame:
    return pd.read_csv(OFFICIAL / fig / "outcomes.csv", dtype={"seed": str})


def _trajectories(fig: str) -> pd.DataFrame | None:
    path = OFFICIAL / fig / "trajectories.csv"
    return pd.read_csv(path, dtype={"seed": str}) if path.exists() else None


def _per_run(out: pd.DataFrame) -> dict[tuple[str, str, str], dict[str, float]]:
    runs: dict[tuple[str, str, str], dict[str, float]] = {}
    for row in out.itertuples():
        runs.setdefault((row.run, row.estimator, row.seed), {})[row.metric] = row.value
    return runs


def _series(traj: pd.DataFrame, run, est, seed, metric) -> pd.Series:
    t = traj[(traj.run == run) & (traj.estimator == est) & (traj.seed == seed) & (traj.metric == metric)]
    return t.set_index("iteration")["value"].sort_index()


def test_every_official_figure_has_its_files():
    assert {"figure2", "figure3", "figure9", "figure10"} <= set(FIGURES), FIGURES
    for fig in FIGURES:
        assert (OFFICIAL / fig / "outcomes.csv").is_file(), fig
        readme = (OFFICIAL / fig / "README.md").read_text()
        for word in ("Command", "Edits", "Machine", "commit"):
            assert word in readme, f"{fig}/README.md says nothing under {word!r}"


@pytest.mark.parametrize("fig", FIGURES)
def test_outcome_schema(fig):
    out = _outcomes(fig)
    assert list(out.columns) == OUTCOME_COLUMNS
    assert (out.figure == fig).all()
    assert set(out.source_repo) <= REPOS, set(out.source_repo)
    assert out.commit.map(lambda c: bool(re.fullmatch(r"[0-9a-f]{40}", str(c)))).all()
    assert out.seed.map(lambda s: s == "all" or str(s).isdigit()).all()
    key = ["run", "estimator", "seed", "metric"]
    assert not out.duplicated(key).any(), out[out.duplicated(key, keep=False)]
    empty = out.value.isna()
    assert out[empty].metric.map(lambda m: bool(MAY_BE_EMPTY.match(m))).all(), out[empty]
    assert np.isfinite(out.value[~empty & ~out.metric.str.startswith("loss_")]).all()
    traj = _trajectories(fig)
    if traj is not None:
        assert list(traj.columns) == TRAJECTORY_COLUMNS
        assert (traj.figure == fig).all()
        assert not traj.duplicated(["run", "estimator", "seed", "iteration", "metric"]).any()
        assert (OFFICIAL / fig / "trajectories.csv").stat().st_size < 300_000
        # every trajectory belongs to a run with summary rows
        runs = set(_per_run(out))
        assert set(map(tuple, traj[["run", "estimator", "seed"]].drop_duplicates().to_numpy())) <= runs


def _check_first_reach(series: pd.Series, it: float, level: float, name: str):
    """`it` is the first logged iteration at or below `level`: the trajectory keeps that point and
    every kept point before it is above."""
    if math.isnan(it):
        assert (series > level).all(), f"{name}: never reached, yet the trajectory reaches {level}"
        return
    assert it in series.index, f"{name}: first-reach iteration {it} not kept in the trajectory"
    assert series[it] <= level * (1 + RTOL), name
    assert (series[series.index < it] > level).all(), f"{name}: reached before iteration {it}"


def _check_window(series: pd.Series, m: dict, key: str, start: float, name: str):
    """`<key>_min/max/mean/std` summarise the logged values from iteration `start` on."""
    late = series[series.index >= start]
    lo, hi = m[f"{key}_min"], m[f"{key}_max"]
    assert ((late >= lo - abs(lo) * RTOL) & (late <= hi + abs(hi) * RTOL)).all(), name
    # the kept points are a subsample of the window the mean and std were taken over
    mean = m[f"{key}_mean"]
    assert abs(late.mean() - mean) <= 3 * m[f"{key}_std"] + RTOL * abs(mean) + 1e-12, name


def _check_final_and_window(series: pd.Series, m: dict, prefix: str, total: int, name: str):
    final = m["final_iteration"]
    assert series.index.max() == final, name
    assert series[final] == pytest.approx(m[f"{prefix}_final"], rel=RTOL, abs=1e-12), name
    _check_window(series, m, f"{prefix}_last10", 0.9 * total, name)


def _check_partial_runs(traj: pd.DataFrame, runs: dict, at_stop: dict[str, str]):
    """A run stopped early is kept as `<run>-partial`: its values where it stopped are the last
    trajectory point, and it has none of the end-of-run summaries a threshold could read."""
    for (run, est, seed), m in runs.items():
        if not run.endswith("-partial"):
            continue
        assert not any(k.endswith(("_final", "_last10_mean")) for k in m), run
        for metric, key in at_stop.items():
            s = _series(traj, run, est, seed, metric)
            assert s.index.max() == m["stopped_iteration"], run
            assert s.iloc[-1] == pytest.approx(m[key], rel=RTOL), f"{run} {metric}"


@pytest.mark.skipif("figure9" not in FIGURES, reason="no figure 9 outcomes")
def test_figure9_summaries_match_trajectories():
    out, traj = _outcomes("figure9"), _trajectories("figure9")
    runs = _per_run(out)
    _check_partial_runs(traj, runs, {"theta": "theta_at_stop", "val_loss": "val_loss_at_stop"})
    per_run = {k: v for k, v in runs.items() if k[2] != "all" and not k[0].endswith("-partial")}
    assert "pes" in {k[1] for k in per_run}, "no complete PES run"
    for (run, est, seed), m in per_run.items():
        name = f"{run} seed {seed}"
        theta = _series(traj, run, est, seed, "theta")
        _check_final_and_window(theta, m, "theta", 50_000, name)
        _check_window(theta, m, "theta_half2", 25_000, name)
        star = runs[("pooled", est, "all")]["theta_star"]
        assert m["abs_err_final"] == pytest.approx(abs(m["theta_final"] - star), rel=RTOL), name
        assert m["abs_err_last10_mean"] == pytest.approx(abs(m["theta_last10_mean"] - star), rel=RTOL), name
        assert m["abs_err_half2_mean"] == pytest.approx(abs(m["theta_half2_mean"] - star), rel=RTOL), name
        assert 0.0 <= m["frac_within_0p05_last10"] <= 1.0
        _check_first_reach((theta - star).abs(), m["first_iter_within_0p05"], 0.05 + 1e-6, name)
        assert _series(traj, run, est, seed, "val_loss")[m["final_iteration"]] == pytest.approx(
            m["val_loss_final"], rel=RTOL), name
        assert theta.iloc[0] == pytest.approx(m["theta_init"], abs=0.01), name  # one Adam step of 3e-3
    for est in sorted({k[1] for k in per_run}):
        p = runs[("pooled", est, "all")]
        mine = [m for (r, e, s), m in per_run.items() if e == est]
        assert p["n_runs"] == len(mine)
        assert p["n_seeds"] == len({s for (r, e, s) in per_run if e == est})
        assert p["theta_final_min"] == min(m["theta_final"] for m in mine)
        assert p["theta_final_max"] == max(m["theta_final"] for m in mine)
        assert p["abs_err_last10_mean_max"] == max(m["abs_err_last10_mean"] for m in mine)
        assert p["theta_last10_mean_max"] == max(m["theta_last10_mean"] for m in mine)
        assert p["abs_err_half2_mean_max"] == max(m["abs_err_half2_mean"] for m in mine)


@pytest.mark.skipif("figure2" not in FIGURES, reason="no figure 2 outcomes")
def test_figure2_summaries_match_trajectories():
    out, traj = _outcomes("figure2"), _trajectories("figure2")
    for (run, est, seed), m in _per_run(out).items():
        name = f"{run} seed {seed}"
        loss = _series(traj, run, est, seed, "loss")
        theta = _series(traj, run, est, seed, "theta")
        final = m["final_iteration"]
        assert loss.index.max() == theta.index.max() == final, name
        assert loss[final] == pytest.approx(m["loss_final"], rel=RTOL), name
        assert theta[final] == pytest.approx(m["theta_final"], rel=RTOL), name
        assert m["abs_err_final"] == pytest.approx(abs(m["theta_final"] + 1 / 6), rel=1e-5, abs=1e-7), name
        assert (loss.dropna() >= m["loss_min"] * (1 - RTOL)).all(), name
        for level in ("1e-10", "1e-6"):
            _check_first_reach(loss, m[f"first_iter_loss_le_{level}"], float(level), f"{name} {level}")


@pytest.mark.skipif("figure3" not in FIGURES, reason="no figure 3 outcomes")
def test_figure3_summaries_match_trajectories():
    out, traj = _outcomes("figure3"), _trajectories("figure3")
    runs = _per_run(out)
    at_stop = {"L": "L_at_stop", "theta0": "theta0_at_stop", "theta1": "theta1_at_stop"}
    _check_partial_runs(traj, runs, at_stop)
    for (run, est, seed), m in runs.items():
        name = f"{run} seed {seed}"
        if run.endswith("-partial"):
            _check_first_reach(_series(traj, run, est, seed, "L"), m["first_iter_L_le_600"], 600.0, name)
            continue
        L = _series(traj, run, est, seed, "L")
        _check_final_and_window(L, m, "L", 20_000, name)
        assert L[0] == pytest.approx(m["L_first"], rel=RTOL), name
        assert (L >= m["L_min"] * (1 - RTOL)).all(), name
        for k in ("theta0", "theta1"):
            assert _series(traj, run, est, seed, k)[m["final_iteration"]] == pytest.approx(
                m[f"{k}_final"], rel=RTOL, abs=1e-9), name
        _check_first_reach(L, m["first_iter_L_le_600"], 600.0, name)


@pytest.mark.skipif("figure10" not in FIGURES, reason="no figure 10 outcomes")
def test_figure10_ratios_follow_from_the_per_estimator_rows():
    runs = _per_run(_outcomes("figure10"))
    windows = sorted({r for (r, e, s) in runs})
    assert windows, "no variance rows"
    for run in windows:
        seed = next(s for (r, e, s) in runs if r == run)
        pes, nres, both = (runs[(run, e, seed)] for e in ("pes", "nres", "nres_vs_pes"))
        assert both["variance_ratio"] == pytest.approx(nres["variance"] / pes["variance"], rel=1e-6), run
        assert 0 < both["variance_ratio_lo"] < both["variance_ratio_hi"], run
        m_pes = np.array([pes["mean_g_log_a"], pes["mean_g_log_r"]])
        m_nres = np.array([nres["mean_g_log_a"], nres["mean_g_log_r"]])
        offset = np.sum((m_pes - m_nres) ** 2) / np.sum(m_nres**2)
        assert both["mean_offset_rel"] == pytest.approx(offset, rel=1e-5), run
        assert pes["n_estimates"] >= 2 and nres["n_estimates"] >= 2, run
