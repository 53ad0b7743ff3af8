"""Figure 5 (MNIST LR schedule) steps that follow the runs: background grid and final-theta
evaluations, both from fresh full-length trainings (``task.full_run``).

Called by ``experiments.reproduce`` through the figure config's ``post:`` entry.  Reads the
figure's ``background`` and ``evaluation`` sections (per-profile overrides under
``quick:``/``paper:``) and writes, beside the merged ``metrics.csv``:

* ``grid.csv``: one row per (metric, grid point) in the grid schema of `pes.results`
  (points from `pes.grid.grid_axes`/`grid_points`)
  (``task, metric, theta/0, theta/1, value``; theta in the task's natural-log space),
  the mean over ``num_runs`` trainings of ``train_sum_loss`` and ``final_val_acc``;
  ``grid.json``: settings, dataset, wall time, machine;
* ``evaluation.csv``: rows in the results schema with metrics ``final/<name>`` (mean over
  ``num_runs`` trainings at each run's final theta, plus ``final/<name>_se``, the standard
  error), and the same for the initial theta under run_id ``init``; these rows are also
  appended to ``metrics.csv`` so the plot and notebook read one table.

Finished grids/evaluations with the same settings are reused.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from experiments import config as C
from experiments import io
from pes import grid as G
from pes import results

GRID_CSV, GRID_META = "grid.csv", "grid.json"
EVAL_CSV, EVAL_META = "evaluation.csv", "evaluation.json"
GRID_METRICS = ("train_sum_loss", "final_val_acc")
EVAL_KEY_SEED = 12345  # every theta is evaluated with the same keys (common random numbers)


def task_config(fig: DictConfig, profile: str, extra: list[str]) -> DictConfig:
    """The figure's task (base + profile overrides) with the train-loss objective."""
    profiles = fig.get("profiles", {}) or {}
    return C.compose(
        [
            *fig.get("base", []),
            *profiles.get(profile, []),
            f"profile={profile}",
            f"figure_id={fig.id}",
            *extra,
            "task.objective=train_sum_loss",
        ]
    )


def _mean_runs(full_run, num_runs: int, key):
    keys = jax.random.split(key, num_runs)

    def at(theta):
        out = jax.vmap(lambda k: full_run(theta, k))(keys)
        return {k: jnp.stack([jnp.mean(v), jnp.std(v) / math.sqrt(num_runs)]) for k, v in out.items()}

    return at


def evaluate_thetas(
    full_run, thetas: np.ndarray, num_runs: int, chunk_size: int, key, progress: bool = False
) -> dict[str, np.ndarray]:
    """Mean and standard error over ``num_runs`` fresh trainings at every row of ``thetas``.

    Returns name -> array (P, 2) of (mean, standard error).  ``vmap`` over chunks of
    ``chunk_size`` thetas (padded), one compiled call per chunk.
    """
    thetas = np.asarray(thetas, np.float32)
    fn = jax.jit(jax.vmap(_mean_runs(full_run, num_runs, key)))
    chunk = min(chunk_size, len(thetas))
    out: dict[str, list] = {}
    for lo in range(0, len(thetas), chunk):
        part = thetas[lo : lo + chunk]
        n = len(part)
        if n < chunk:
            part = np.concatenate([part, np.broadcast_to(part[:1], (chunk - n, part.shape[1]))])
        values = jax.device_get(fn(jnp.asarray(part)))
        for k, v in values.items():
            out.setdefault(k, []).append(np.asarray(v)[:n])
        if progress:
            print(f"  evaluated {min(lo + chunk, len(thetas))}/{len(thetas)} thetas", file=sys.stderr)
    return {k: np.concatenate(v) for k, v in out.items()}


def background_grid(task, settings: dict, out_dir: Path, seed: int, progress: bool) -> Path:
    """The grid (log10 axes in the config, natural-log theta in the CSV)."""
    stamp = dict(
        settings,
        dataset=task.dataset.name,
        horizon=task.metadata["horizon"],
        hidden=task.metadata["hidden"],
        num_features=task.metadata["num_features"],
        seed=seed,
    )
    meta = io.read_json(out_dir / GRID_META)
    if meta and meta.get("settings") == stamp and (out_dir / GRID_CSV).exists():
        return out_dir / GRID_CSV
    try:  # the grid tool's axes and point order (C order, last dimension fastest)
        axes = G.grid_axes(settings["low"], settings["high"], settings["num"])
    except ValueError as err:
        raise C.ConfigError(f"background: {err}") from err
    # Not G.evaluate_points: that maps a scalar function; here every point yields several
    # metrics averaged over num_runs trainings (evaluate_thetas, same chunked vmap idea).
    points = G.grid_points(axes) * np.log(10.0)
    start = time.perf_counter()
    values = evaluate_thetas(
        task.full_run,
        points,
        int(settings["num_runs"]),
        int(settings["chunk_size"]),
        jax.random.key(seed),
        progress,
    )
    wall = time.perf_counter() - start
    frames = [results.grid_frame(task.name, m, points, values[m][:, 0]) for m in GRID_METRICS]
    io.atomic_write_text(out_dir / GRID_CSV, pd.concat(frames, ignore_index=True).to_csv(index=False))
    io.write_json(
        out_dir / GRID_META,
        {
            "settings": stamp,
            "num_points": len(points),
            "wall_time_s": wall,
            "data_origin": task.dataset.origin,
            "git_commit": io.git_commit(C.ROOT),
            "machine": io.machine(),
        },
    )
    return out_dir / GRID_CSV


def final_thetas(df: pd.DataFrame) -> dict[str, tuple[pd.Series, np.ndarray]]:
    """run_id -> (its run columns, final theta) from a merged metrics table."""
    out = {}
    for rid, sub in df.groupby("run_id"):
        last = sub[sub["outer_step"] == sub["outer_step"].max()]
        vals = last.set_index("metric")["value"]
        if "theta/0" in vals and "theta/1" in vals:
            out[str(rid)] = (last.iloc[0], np.array([vals["theta/0"], vals["theta/1"]]))
    return out


def evaluate_runs(task, df: pd.DataFrame, settings: dict, out_dir: Path, fig_id: str) -> pd.DataFrame:
    """Rows ``final/<metric>`` (+ ``_se``) for every run's final theta and for theta_init."""
    finals = final_thetas(df)
    thetas = {rid: theta for rid, (_, theta) in finals.items()}
    thetas["init"] = np.asarray(task.theta_init, np.float64)
    stamp = dict(
        settings,
        thetas={k: [float(x) for x in v] for k, v in thetas.items()},
        dataset=task.dataset.name,
        horizon=task.metadata["horizon"],
        hidden=task.metadata["hidden"],
        num_features=task.metadata["num_features"],
    )
    meta = io.read_json(out_dir / EVAL_META)
    if meta and meta.get("settings") == stamp and (out_dir / EVAL_CSV).exists():
        return pd.read_csv(out_dir / EVAL_CSV)
    names = list(thetas)
    start = time.perf_counter()
    values = evaluate_thetas(
        task.full_run,
        np.stack([thetas[n] for n in names]),
        int(settings["num_runs"]),
        len(names),
        jax.random.key(EVAL_KEY_SEED),
    )
    wall = time.perf_counter() - start
    records = []
    for i, rid in enumerate(names):
        if rid == "init":
            info = dict(
                run_id="init",
                figure=fig_id,
                task=task.name,
                estimator="init",
                trunc_len=0,
                sigma=float("nan"),
                num_particles=-1,
                seed=0,
            )
            step, inner = 0, 0
        else:
            row = finals[rid][0]
            info = {c: row[c] for c in results.RUN_COLUMNS}
            step, inner = int(row["outer_step"]), int(row["inner_steps"])
        if rid == "init":  # the start point of every trajectory, for the plot's star
            records += [
                dict(
                    info,
                    outer_step=0,
                    inner_steps=0,
                    metric=f"theta/{j}",
                    value=float(thetas[rid][j]),
                )
                for j in range(2)
            ]
        for metric, v in sorted(values.items()):
            for suffix, value in (("", v[i, 0]), ("_se", v[i, 1])):
                records.append(
                    dict(
                        info,
                        outer_step=step,
                        inner_steps=inner,
                        metric=f"final/{metric}{suffix}",
                        value=float(value),
                    )
                )
    table = results.frame(records)
    io.atomic_write_text(out_dir / EVAL_CSV, table.to_csv(index=False))
    io.write_json(
        out_dir / EVAL_META,
        {
            "settings": stamp,
            "wall_time_s": wall,
            "data_origin": task.dataset.origin,
            "machine": io.machine(),
        },
    )
    return table


def run(fig: DictConfig, profile: str, extra: list[str], metrics_path: Path) -> None:
    """Grid + evaluations for figure 5; rewrites ``metrics_path`` with the evaluation rows."""
    metrics_path = Path(metrics_path)
    out_dir = metrics_path.parent
    cfg = task_config(fig, profile, extra)
    built = C.build(cfg)
    task = built.task
    try:
        task.require("full_run", "dataset", by=f"{fig.id}'s grid and evaluations")
    except ValueError as err:
        raise C.ConfigError(str(err)) from err
    print(
        f"{fig.id}: dataset {task.dataset.name} ({task.dataset.origin})",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    settings = C.figure_section(fig, "background", profile)
    background_grid(task, settings, out_dir, int(cfg.seed), bool(cfg.progress))
    print(
        f"{fig.id}: grid done ({time.perf_counter() - t0:.1f} s) -> {out_dir / GRID_CSV}",
        file=sys.stderr,
    )
    df = pd.read_csv(metrics_path)
    df = df[~df["metric"].str.startswith("final/")]
    t0 = time.perf_counter()
    evals = evaluate_runs(task, df, C.figure_section(fig, "evaluation", profile), out_dir, str(fig.id))
    print(
        f"{fig.id}: final-theta evaluations done ({time.perf_counter() - t0:.1f} s)",
        file=sys.stderr,
    )
    merged = results.validate(pd.concat([df, evals], ignore_index=True))
    io.atomic_write_text(metrics_path, merged.to_csv(index=False))
