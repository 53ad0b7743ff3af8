"""Post-step ``grid``: a task metric on a regular grid over theta (figure 3's surface,
figure 5's background).

Settings (per-profile changes under ``<profile>:``; ``grid.<key>=<value>`` on the command line):

    metrics     the metrics to grid (required)
    low, high   the grid's bounds, one number per theta dimension (or one for all; required)
    num         points per dimension (one integer, or one per dimension; required)
    of          evaluate (default): ``task.evaluate(theta, key)[metric]``;
                full_run: the mean over ``num_runs`` fresh full-horizon trainings
                (``task.full_run``, keys from the config's seed)
    num_runs    full_run only: trainings averaged per point (default 1)
    scale       theta (default): the axes are theta itself; log10: the axes are log10 of
                exp(theta), for theta the natural log of positive hyperparameters
    chunk_size  grid points per vmapped call (default 4096; memory only, not fingerprinted)
    overrides   Hydra overrides of the task config (default none)

Writes the table ``grid.csv`` beside the figure's metrics.csv (the grid schema of
`pes.results`, one row per metric and point, theta in the task's units, C order) and rows
(run_id ``grid``, estimator ``grid``, outer step 0) per metric ``m``: ``m/min``,
``m/argmin/<i>``, ``m/max``, ``m/argmax/<i>`` (theta at the extremes, NaN ignored) and
``m/at_init`` (the value at the grid point nearest the task's theta_init).
"""

from __future__ import annotations

import sys
from typing import NamedTuple

import jax
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from experiments import config, steps
from experiments.steps.evaluation import evaluate_thetas
from pes import grid, results

BLOCK_CHUNKS = 16  # chunks per compiled call: the progress-bar granularity
SOURCES = ("evaluate", "full_run")
SCALES = ("theta", "log10")


class Plan(NamedTuple):
    settings: dict
    cfg: object
    built: object
    axes: list[np.ndarray]


def check(s: dict, where: str) -> dict:
    steps.check_names(s, "metrics", where)
    steps.check_choice(s, "of", SOURCES, where)
    steps.check_choice(s, "scale", SCALES, where)
    steps.check_int(s, "num_runs", 1, where)
    steps.check_int(s, "chunk_size", 1, where)
    try:
        grid.grid_axes(s["low"], s["high"], s["num"])
    except (ValueError, TypeError) as err:
        raise config.ConfigError(f"{where}: {err}") from err
    return s


def axes_in_theta(s: dict) -> list[np.ndarray]:
    axes = grid.grid_axes(s["low"], s["high"], s["num"])
    return [a * np.log(10.0) for a in axes] if s["scale"] == "log10" else axes


def prepare(ctx: steps.Context, s: dict) -> Plan:
    cfg = ctx.task_config(s["overrides"])
    built = config.build(cfg)
    task = built.task
    function = task.evaluate
    if s["of"] == "full_run":
        steps.require(task, ("full_run",), "grid", str(ctx.fig.id))
        function = task.full_run
    probe = jax.eval_shape(function, task.theta_init, jax.random.key(0))
    missing = [m for m in s["metrics"] if m not in probe]
    if missing:
        raise config.ConfigError(
            f"grid.metrics has {missing[0]!r}, which task {task.name}'s {s['of']} does not return; "
            f"allowed: {', '.join(sorted(probe))}"
        )
    axes = axes_in_theta(s)
    dim = int(np.size(task.theta_init))
    if len(axes) != dim:
        raise config.ConfigError(f"grid has {len(axes)} dimensions but task {task.name}'s theta has {dim}")
    return Plan(s, cfg, built, axes)


def inputs(ctx: steps.Context, plan: Plan) -> dict:
    return steps.task_inputs(plan.cfg, plan.built.task)


def compute(ctx: steps.Context, plan: Plan) -> steps.StepOutput:
    s, task = plan.settings, plan.built.task
    config.use_x64(plan.cfg)
    points = grid.grid_points(plan.axes)
    key = jax.random.key(int(plan.cfg.seed))
    if s["of"] == "evaluate":
        values = {
            m: evaluate_blocks(task, m, points, s["chunk_size"], key, ctx.progress) for m in s["metrics"]
        }
    else:
        means = evaluate_thetas(task.full_run, points, s["num_runs"], s["chunk_size"], key, ctx.progress)
        values = {m: means[m][:, 0] for m in s["metrics"]}
    surface = pd.concat(
        [results.grid_frame(task.name, m, points, values[m]) for m in s["metrics"]], ignore_index=True
    )
    rows = summary_rows(str(ctx.fig.id), task, int(plan.cfg.seed), points, values)
    mins = {m: float(np.nanmin(v)) for m, v in values.items()}
    return steps.StepOutput(results.frame(rows), {"grid": surface}, {"num_points": len(points), "min": mins})


def evaluate_blocks(task, metric: str, points: np.ndarray, chunk_size: int, key, progress: bool):
    """``task.evaluate(theta, key)[metric]`` at every point, in compiled blocks of chunks."""
    shape = np.shape(task.theta_init)
    dim = points.shape[1]

    def fn(theta_flat):
        return task.evaluate(theta_flat.reshape(shape), key)[metric]

    chunk = min(int(chunk_size), len(points))
    block = chunk * BLOCK_CHUNKS
    evaluate = jax.jit(lambda p: grid.evaluate_points(fn, p, chunk))
    values = np.empty(len(points))
    with tqdm(
        total=len(points),
        desc=f"grid {task.name}",
        unit="pt",
        disable=not progress,
        file=sys.stderr,
        leave=False,
    ) as bar:
        for lo in range(0, len(points), block):
            part = points[lo : lo + block]
            if len(part) < block and len(points) > block:  # same shape, one compilation
                part = np.concatenate([part, np.broadcast_to(part[:1], (block - len(part), dim))])
            n = min(block, len(points) - lo)
            values[lo : lo + n] = np.asarray(evaluate(part))[:n]
            bar.update(n)
    return values


def summary_rows(fig_id: str, task, seed: int, points: np.ndarray, values: dict) -> list[dict]:
    """The extremes of every metric and its value at the grid point nearest theta_init."""
    info = steps.info_row(fig_id, task.name, "grid", "grid", seed, outer_step=0, inner_steps=0)
    start = np.asarray(task.theta_init, np.float64).reshape(-1)
    nearest = int(np.argmin(np.sum((points - start) ** 2, axis=1)))
    rows = []
    for metric, v in values.items():
        v = np.asarray(v, np.float64)
        if np.all(np.isnan(v)):
            raise ValueError(f"grid: every value of {metric} is NaN; there is no minimum")
        named = {f"{metric}/at_init": v[nearest]}
        for which, index in (("min", int(np.nanargmin(v))), ("max", int(np.nanargmax(v)))):
            named[f"{metric}/{which}"] = v[index]
            named.update({f"{metric}/arg{which}/{i}": x for i, x in enumerate(points[index])})
        rows += [dict(info, metric=name, value=float(value)) for name, value in named.items()]
    return rows


STEP = steps.register(
    steps.PostStep(
        name="grid",
        summary="a task metric on a regular theta grid",
        defaults={
            "metrics": steps.REQUIRED,
            "low": steps.REQUIRED,
            "high": steps.REQUIRED,
            "num": steps.REQUIRED,
            "of": "evaluate",
            "num_runs": 1,
            "scale": "theta",
            "chunk_size": 4096,
        },
        check=check,
        prepare=prepare,
        inputs=inputs,
        compute=compute,
        non_result=("chunk_size",),
    )
)
