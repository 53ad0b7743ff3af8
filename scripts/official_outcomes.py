"""Summarise runs of the paper's own code into results/reference/official/<figure>/.

    python scripts/official_outcomes.py figure9 LOG_DIR WALLTIMES.csv OUT_DIR COMMIT
    python scripts/official_outcomes.py figure2 LOG_DIR WALLTIMES.csv OUT_DIR COMMIT
    python scripts/official_outcomes.py figure3 LOG_DIR WALLTIMES.csv OUT_DIR COMMIT
    python scripts/official_outcomes.py figure10 ESTIMATES_DIR TIMINGS.csv OUT_DIR COMMIT

LOG_DIR holds the `iteration.csv` files the official scripts write (one folder per run, named by
the script itself; figure 2 adds one `s<seed>/` level because its folder name has no seed; a run
that stopped before its full length is kept as `<run>-partial` with where it was when stopped);
ESTIMATES_DIR holds one CSV of gradient estimates per (W, K).  WALLTIMES.csv has one line per
run (see each README for its columns); COMMIT is the official code's commit, written into every
row.  Writes `outcomes.csv` (columns `figure, source_repo,
commit, run, estimator, seed, metric, value`) and, where it applies, `trajectories.csv`
(`figure, run, estimator, seed, iteration, metric, value`).  Every README in that folder names
the settings and the command.  Reads only; runs nothing.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

GR = "google-research/google-research"
NRES = "OscarcarLi/Noise-Reuse-Evolution-Strategies"
OUTCOME_COLUMNS = ["figure", "source_repo", "commit", "run", "estimator", "seed", "metric", "value"]
TRAJECTORY_COLUMNS = ["figure", "run", "estimator", "seed", "iteration", "metric", "value"]
LAST_FRACTION = 0.1  # "last 10 %" = logged points at iterations >= 0.9 x the run's length


def _scalar(cell) -> float:
    """The official scripts log 1-element arrays as '[1.23]'."""
    return float(str(cell).strip().strip("[]"))


def _first_at_or_below(iterations, values, threshold):
    hit = np.flatnonzero(np.asarray(values) <= threshold)
    return float(iterations[hit[0]]) if hit.size else math.nan


def _rows(figure, repo, commit, run, estimator, seed, metrics: dict) -> list[dict]:
    return [dict(figure=figure, source_repo=repo, commit=commit, run=run, estimator=estimator,
                 seed=seed, metric=k, value=float(v)) for k, v in metrics.items()]


def _trajectory(figure, run, estimator, seed, it, columns: dict, keep) -> list[dict]:
    out = []
    for name, values in columns.items():
        out += [dict(figure=figure, run=run, estimator=estimator, seed=seed, iteration=int(i),
                     metric=name, value=float(v)) for i, v, k in zip(it, values, keep) if k]
    return out


def _walltimes(path, names) -> pd.DataFrame:
    return pd.read_csv(path, header=None, names=names)


def _last(it, total):
    return it >= (1.0 - LAST_FRACTION) * total


# ----------------------------------------------------------------------------- figure 9
THETA_STAR_FIG9 = 1.3333  # closed-form ridge optimum on the official split (see the README)


def figure9(log_dir: Path, walltimes: Path, commit: str, iterations: int = 50_000):
    wt = _walltimes(walltimes, ["estimator", "init", "seed", "rc", "wall_s", "load"])
    outcomes, traj = [], []
    for d in sorted(Path(log_dir).glob("yacht-*")):
        m = re.match(r"yacht-(\w+)-theta:(-?[\d.]+)-.*-s:(\d+)$", d.name)
        est, init, seed = m.group(1), float(m.group(2)), int(m.group(3))
        df = pd.read_csv(d / "iteration.csv")
        it = df["outer_iteration"].to_numpy()
        theta = df["theta"].map(_scalar).to_numpy()
        val = df["val_loss"].to_numpy(float)
        last = _last(it, iterations)
        half = it >= iterations / 2
        err = np.abs(theta - THETA_STAR_FIG9)
        run = f"{est}-init{init:g}"
        if it[-1] < iterations - 10:  # stopped early: only where it was, under its own run id
            run += "-partial"
            outcomes += _rows("figure9", GR, commit, run, est, seed, {
                "theta_init": init, "stopped_iteration": it[-1], "theta_at_stop": theta[-1],
                "val_loss_at_stop": val[-1]})
            keep = (it % 250 == 0) | (it == it[-1])
            traj += _trajectory("figure9", run, est, seed, it, {"theta": theta, "val_loss": val}, keep)
            continue
        w = wt[(wt.estimator == est) & (wt.init == init) & (wt.seed == seed) & (wt.rc == 0)]
        metrics = {
            "theta_init": init,
            "final_iteration": it[-1],
            "theta_final": theta[-1],
            "val_loss_final": val[-1],
            "theta_last10_mean": theta[last].mean(),
            "theta_last10_std": theta[last].std(ddof=1),
            "theta_last10_min": theta[last].min(),
            "theta_last10_max": theta[last].max(),
            "val_loss_last10_mean": val[last].mean(),
            # the second half: theta wanders slowly, so a longer window is a steadier summary
            "theta_half2_mean": theta[half].mean(),
            "theta_half2_std": theta[half].std(ddof=1),
            "theta_half2_min": theta[half].min(),
            "theta_half2_max": theta[half].max(),
            "abs_err_final": err[-1],
            "abs_err_last10_mean": abs(theta[last].mean() - THETA_STAR_FIG9),
            "abs_err_half2_mean": abs(theta[half].mean() - THETA_STAR_FIG9),
            "frac_within_0p05_last10": float(np.mean(err[last] <= 0.05)),
            "first_iter_within_0p05": _first_at_or_below(it, err, 0.05),
        }
        if len(w):
            metrics["wall_s"] = float(w.wall_s.iloc[-1])
        outcomes += _rows("figure9", GR, commit, run, est, seed, metrics)
        keep = (it % 250 == 0) | (it == it[-1]) | (it == metrics["first_iter_within_0p05"])
        traj += _trajectory("figure9", run, est, seed, it, {"theta": theta, "val_loss": val}, keep)
    out = pd.DataFrame(outcomes)
    pooled = []
    for est, g in out[~out.run.str.endswith("-partial")].groupby("estimator"):
        per_run = g.pivot_table(index=["run", "seed"], columns="metric", values="value")
        seeds = sorted(per_run.index.get_level_values("seed").unique())
        pooled += _rows("figure9", GR, commit, "pooled", est, "all", {
            "n_runs": len(per_run),
            "n_seeds": len(seeds),
            "theta_final_min": per_run.theta_final.min(),
            "theta_final_max": per_run.theta_final.max(),
            "theta_last10_mean_min": per_run.theta_last10_mean.min(),
            "theta_last10_mean_max": per_run.theta_last10_mean.max(),
            "theta_last10_min": per_run.theta_last10_min.min(),
            "theta_last10_max": per_run.theta_last10_max.max(),
            "abs_err_final_max": per_run.abs_err_final.max(),
            "abs_err_last10_mean_max": per_run.abs_err_last10_mean.max(),
            "abs_err_last10_mean_min": per_run.abs_err_last10_mean.min(),
            "theta_half2_mean_min": per_run.theta_half2_mean.min(),
            "theta_half2_mean_max": per_run.theta_half2_mean.max(),
            "abs_err_half2_mean_max": per_run.abs_err_half2_mean.max(),
            "abs_err_half2_mean_min": per_run.abs_err_half2_mean.min(),
            "theta_star": THETA_STAR_FIG9,
        })
    return pd.concat([out, pd.DataFrame(pooled)]), pd.DataFrame(traj)


# ----------------------------------------------------------------------------- figure 2
THETA_STAR_FIG2 = -1.0 / 6.0  # steady state of the influence-balancing recurrence


def figure2(log_dir: Path, walltimes: Path, commit: str, iterations: int = 3000):
    wt = _walltimes(walltimes, ["tag", "seed", "rc", "wall_s", "load0", "load1", "args"])
    outcomes, traj = [], []
    for d in sorted(Path(log_dir).glob("s*/*")):
        seed = int(d.parent.name[1:])
        m = re.match(r"(\w+)-lr:([\de.-]+)-K:(\d+)-sigma", d.name)
        est, k = m.group(1), int(m.group(3))
        run = f"{est}-k{k}"
        df = pd.read_csv(d / "iteration.csv")
        it = df["iteration"].to_numpy()
        if len(it) == 0 or it[-1] != iterations - 1:
            raise SystemExit(f"{d}: {len(it)} of {iterations} iterations logged; let it finish or rerun it")
        loss = df["loss"].to_numpy(float)
        theta = df["theta"].map(_scalar).to_numpy()
        w = wt[(wt.tag == f"{est}-K{k}") & (wt.seed == seed) & (wt.rc == 0)]
        metrics = {
            "final_iteration": it[-1],
            "loss_final": loss[-1],
            "theta_final": theta[-1],
            "abs_err_final": abs(theta[-1] - THETA_STAR_FIG2),
            "loss_min": np.nanmin(loss),
            "loss_nonfinite": float(not np.all(np.isfinite(loss))),
            "first_iter_loss_le_1e-10": _first_at_or_below(it, loss, 1e-10),
            "first_iter_loss_le_1e-6": _first_at_or_below(it, loss, 1e-6),
        }
        if len(w):
            metrics["wall_s"] = float(w.wall_s.iloc[-1])
        outcomes += _rows("figure2", GR, commit, run, est, seed, metrics)
        keep = ((it % 50 == 0) | (it == it[-1]) | (it == metrics["first_iter_loss_le_1e-10"])
                | (it == metrics["first_iter_loss_le_1e-6"]))
        traj += _trajectory("figure2", run, est, seed, it, {"loss": loss, "theta": theta}, keep)
    return pd.DataFrame(outcomes), pd.DataFrame(traj)


# ----------------------------------------------------------------------------- figure 3
VALLEY = 600.0  # meta-objective level of the low valley (grid minimum about 552)


def figure3(log_dir: Path, walltimes: Path, commit: str, iterations: int = 20_000):
    wt = _walltimes(walltimes, ["tag", "seed", "rc", "wall_s", "load0", "load1", "args"])
    outcomes, traj = [], []
    for d in sorted(Path(log_dir).glob("*-sum-lr:linear-*")):
        m = re.match(r"(\w+)-sum-.*-sigma:([\d.]+)-seed:(\d+)$", d.name)
        est, sigma, seed = m.group(1), float(m.group(2)), int(m.group(3))
        df = pd.read_csv(d / "iteration.csv")
        it = df["iteration"].to_numpy()
        L = df["L"].to_numpy(float)
        t0, t1 = df["theta0"].to_numpy(float), df["theta1"].to_numpy(float)
        if it[-1] < iterations - 10:  # stopped early: only where it was, under its own run id
            run = f"{est}-partial"
            first = _first_at_or_below(it, L, VALLEY)
            outcomes += _rows("figure3", GR, commit, run, est, seed, {
                "sigma": sigma, "stopped_iteration": it[-1], "L_first": L[0], "L_at_stop": L[-1],
                "theta0_at_stop": t0[-1], "theta1_at_stop": t1[-1], "L_min": L.min(),
                "first_iter_L_le_600": first})
            keep = (it % 200 == 0) | (it == it[-1]) | (it == first)
            traj += _trajectory("figure3", run, est, seed, it, {"L": L, "theta0": t0, "theta1": t1}, keep)
            continue
        last = _last(it, iterations)
        w = wt[(wt.tag == est) & (wt.seed == seed) & (wt.rc == 0)]
        metrics = {
            "sigma": sigma,
            "final_iteration": it[-1],
            "L_first": L[0],
            "L_final": L[-1],
            "theta0_final": t0[-1],
            "theta1_final": t1[-1],
            "L_last10_mean": L[last].mean(),
            "L_last10_std": L[last].std(ddof=1),
            "L_last10_min": L[last].min(),
            "L_last10_max": L[last].max(),
            "L_min": L.min(),
            "first_iter_L_le_600": _first_at_or_below(it, L, VALLEY),
        }
        if len(w):
            metrics["wall_s"] = float(w.wall_s.iloc[-1])
        outcomes += _rows("figure3", GR, commit, est, est, seed, metrics)
        keep = (it % 200 == 0) | (it == it[-1]) | (it == metrics["first_iter_L_le_600"])
        traj += _trajectory("figure3", est, est, seed, it, {"L": L, "theta0": t0, "theta1": t1}, keep)
    return pd.DataFrame(outcomes), pd.DataFrame(traj)


# ----------------------------------------------------------------------------- figure 10
def _variance(g: np.ndarray) -> float:
    """Total variance (trace of the covariance) of a sequence of gradient estimates."""
    return float(np.sum(np.var(g, axis=0, ddof=1)))


def _block_resample(g, block, rng):
    n = (len(g) // block) * block
    blocks = g[:n].reshape(-1, block, g.shape[1])
    pick = rng.integers(0, len(blocks), len(blocks))
    return blocks[pick].reshape(-1, g.shape[1])


def figure10(est_dir: Path, timings: Path, commit: str, horizon: int = 2000, nres_k: int = 2001,
             resamples: int = 2000):
    """Per W: one CSV of estimates per (K, chain seed), `W<W>_K<K>_s<seed>.csv`; chains are
    independent (own init and burn-in).  `timings` has one line per file:
    `W,K,seed,n_estimates,burn_in_s,estimates_s` (the driver's last stderr line)."""
    tm = pd.read_csv(timings, header=None, names=["W", "K", "seed", "M", "burn_in_s", "estimates_s"])
    rng = np.random.default_rng(0)
    chains: dict[tuple[int, int], list[np.ndarray]] = {}
    for f in sorted(Path(est_dir).glob("W*_K*_s*.csv")):
        w_len, k, seed = (int(x) for x in re.match(r"W(\d+)_K(\d+)_s(\d+)\.csv", f.name).groups())
        chains.setdefault((w_len, k), []).append(pd.read_csv(f)[["g_log_a", "g_log_r"]].to_numpy())
    outcomes = []
    for w_len in sorted({w for w, _ in chains}):
        pes, nres = chains[(w_len, w_len)], chains[(w_len, nres_k)]
        block = max(1, horizon // w_len)  # estimates per episode: consecutive ones are correlated

        def resample(cs, block=block):
            return np.concatenate([_block_resample(c, block, rng) for c in cs])

        g_pes, g_nres = np.concatenate(pes), np.concatenate(nres)
        m_pes, m_nres = g_pes.mean(axis=0), g_nres.mean(axis=0)
        norm = float(np.sum(m_nres**2))
        ratios, offsets, noise = [], [], []
        for _ in range(resamples):
            b_pes, b_nres = resample(pes), resample(nres)
            ratios.append(_variance(b_nres) / _variance(b_pes))
            d = b_pes.mean(axis=0) - b_nres.mean(axis=0)
            offsets.append(float(np.sum(d**2)) / norm)
            noise.append(float(np.sum((d - (m_pes - m_nres)) ** 2)) / norm)
        run = f"lorenz-variance-w{w_len}"
        for est, g, cs, kk in (("pes", g_pes, pes, w_len), ("nres", g_nres, nres, nres_k)):
            t = tm[(tm.W == w_len) & (tm.K == kk)]
            outcomes += _rows("figure10", NRES, commit, run, est, "all", {
                "n_estimates": len(g), "n_chains": len(cs), "variance": _variance(g),
                "mean_g_log_a": g[:, 0].mean(), "mean_g_log_r": g[:, 1].mean(),
                "burn_in_s": t.burn_in_s.sum(), "estimates_s": t.estimates_s.sum()})
        outcomes += _rows("figure10", NRES, commit, run, "nres_vs_pes", "all", {
            "variance_ratio": _variance(g_nres) / _variance(g_pes),
            "variance_ratio_lo": np.percentile(ratios, 2.5),
            "variance_ratio_hi": np.percentile(ratios, 97.5),
            "mean_offset_rel": float(np.sum((m_pes - m_nres) ** 2)) / norm,
            "mean_offset_rel_lo": np.percentile(offsets, 2.5),
            "mean_offset_rel_hi": np.percentile(offsets, 97.5),
            # what Monte-Carlo error alone adds to the offset (bootstrap mean of the squared
            # deviation of the resampled difference of means): an offset near it is noise
            "mean_offset_rel_noise": float(np.mean(noise)),
            "block_len": block,
        })
    return pd.DataFrame(outcomes), None


def main(argv: list[str]) -> None:
    if len(argv) != 6:
        raise SystemExit(__doc__)
    figure, src, walltimes, out_dir, commit = argv[1], Path(argv[2]), Path(argv[3]), Path(argv[4]), argv[5]
    fn = {"figure2": figure2, "figure3": figure3, "figure9": figure9, "figure10": figure10}.get(figure)
    if fn is None:
        raise SystemExit(f"figure={figure!r}: allowed figure2, figure3, figure9, figure10")
    outcomes, traj = fn(src, walltimes, commit)
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes[OUTCOME_COLUMNS].to_csv(out_dir / "outcomes.csv", index=False, float_format="%.10g")
    if traj is not None and len(traj):
        traj[TRAJECTORY_COLUMNS].to_csv(out_dir / "trajectories.csv", index=False, float_format="%.8g")
    print(f"{out_dir}: {len(outcomes)} outcome rows, {0 if traj is None else len(traj)} trajectory rows")


if __name__ == "__main__":
    main(sys.argv)
