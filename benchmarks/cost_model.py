"""Cost model: predicted wall time of a figure's runs under a profile, from timed outer iterations.

    python benchmarks/cost_model.py --figure figure7 --profile paper_fashion [--particles-cap 32]
        [--iters 3] [--out cost.csv]

For every run of the figure (composed as ``experiments.reproduce`` composes it), the task is
built on synthetic data of the real dataset's shapes (random uint8 pixels in a temporary
``<name>.npz``; timing does not depend on pixel values, and no dataset is needed), then

* ``s_per_outer_iter``: seconds per outer iteration (estimate + optimizer update), the median of
  ``--repeats`` compiled blocks of ``--iters`` iterations, measured with at most
  ``--particles-cap`` particles and scaled linearly to the run's N (compute-bound estimators:
  the work is N x K inner steps), stated in ``particles_timed``;
* ``s_per_eval``: one call of the task's evaluation (logged every ``train.log_every``);
* ``predicted_run_s`` = num_outer_steps x s_per_outer_iter + (num_logs + 1) x s_per_eval
  (compilation excluded; it is reported as ``compile_s`` of the timed block).

Prints one row per run and the figure's total (runs only; a figure's post steps, e.g. figure 5's
background grid, are costed by ``--post``: one full-length training timed and multiplied by the
grid's trainings).  Measures this machine; on an accelerator the same command measures it.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from experiments import config, figures, steps  # noqa: E402
from pes import estimators, outer  # noqa: E402

SHAPES = {  # train / test images of the real datasets
    "mnist": ((60000, 28, 28, 1), 10000),
    "fashion_mnist": ((60000, 28, 28, 1), 10000),
    "cifar10": ((50000, 32, 32, 3), 10000),
}


def synthetic_npz(directory: Path, names=tuple(SHAPES)) -> None:
    rng = np.random.default_rng(0)
    for name in names:
        (n, h, w, c), n_test = SHAPES[name]
        shape = (h, w) if c == 1 else (h, w, c)
        np.savez(
            directory / f"{name}.npz",
            x_train=rng.integers(0, 256, (n, *shape), dtype=np.uint8),
            y_train=rng.integers(0, 10, n).astype(np.uint8),
            x_test=rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
            y_test=rng.integers(0, 10, n_test).astype(np.uint8),
        )


def _timed(fn, *args, repeats=3):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), first


def run_cost(cfg, args) -> dict:
    built = config.build(cfg)
    est_cfg = config._estimator_params(cfg.estimator)  # the factory's keywords (particles -> stagger)
    n = int(est_cfg.get("num_particles", 1))
    group = 2 if est_cfg.get("antithetic", True) else 1
    timed_n = min(n, max(group, args.particles_cap - args.particles_cap % group))
    est_cfg["num_particles"] = timed_n
    est = estimators.make(str(cfg.estimator.name), built.task.system, **est_cfg)
    state = outer.init_state(jax.random.key(0), built.task.theta_init, est, built.optimizer)
    block = outer.make_chunk(est, built.optimizer, log_every=args.iters, num_logs=1)
    t_block, first = _timed(lambda s: block(s)[1], state, repeats=args.repeats)
    s_iter = t_block / args.iters * n / timed_n
    s_eval = 0.0
    if built.task.evaluate is not None:
        ev = jax.jit(built.task.evaluate)
        s_eval, _ = _timed(ev, built.task.theta_init, jax.random.key(0), repeats=1)
    logs = built.num_steps // built.log_every
    return {
        "run_id": config.run_id(cfg),
        "estimator": str(cfg.estimator.name),
        "trunc_len": int(est_cfg.get("trunc_len", 0)),
        "num_particles": n,
        "particles_timed": timed_n,
        "num_outer_steps": built.num_steps,
        "num_evals": logs + 1,
        "s_per_outer_iter": s_iter,
        "s_per_eval": s_eval,
        "compile_s": max(first - t_block, 0.0),
        "predicted_run_s": built.num_steps * s_iter + (logs + 1) * s_eval,
    }


def post_cost(fig, profile, extra) -> dict | None:
    """Figure 5's post-steps (background grid, final-theta evaluations): trainings x one timed training."""
    entries = {str(e.step): e for e in fig.get("post") or []}
    if "grid" not in entries or "evaluation" not in entries:
        return None
    where = f"{fig.id}: post"
    bg = steps.settings(entries["grid"], profile, where)
    ev = steps.settings(entries["evaluation"], profile, where)
    if bg.get("of") != "full_run":
        return None
    cfg = config.compose(figures.figure_overrides(fig, profile, extra, more=bg["overrides"]))
    task = config.build(cfg).task
    full_run = jax.jit(task.full_run)
    s_train, _ = _timed(full_run, task.theta_init, jax.random.key(0), repeats=1)
    points = np.prod([int(n) for n in np.broadcast_to(bg["num"], (len(bg["low"]),))])
    num_bg = int(points) * int(bg["num_runs"])
    num_ev = (len(figures.runs(fig, profile)) + 1) * int(ev["num_runs"])
    return {
        "run_id": f"post:{fig.id}",
        "s_per_training": s_train,
        "trainings": num_bg + num_ev,
        "predicted_run_s": (num_bg + num_ev) * s_train,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figure", required=True)
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--particles-cap", type=int, default=32)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--runs", default=None, help="comma-separated run ids (default: all)")
    parser.add_argument("--post", action="store_true", help="also cost the post step (figure 5)")
    parser.add_argument("--out", default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    fig = figures.load(args.figure)
    data_dir = tempfile.mkdtemp()
    synthetic_npz(Path(data_dir))
    extra = ["progress=false", "task.data_source=npz", f"task.data_dir={data_dir}", *args.overrides]
    runs = figures.runs(fig, args.profile)
    if args.runs:
        keep = args.runs.split(",")
        runs = [r for r in runs if r.id in keep]
    rows = []
    for run in runs:
        cfg = config.compose(figures.run_overrides(fig, run, args.profile, extra))
        row = run_cost(cfg, args)
        rows.append(row)
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    if args.post:
        post = post_cost(fig, args.profile, extra)
        if post:
            rows.append(post)
            print(post, flush=True)
    df = pd.DataFrame(rows)
    df.insert(0, "profile", args.profile)
    df.insert(0, "figure", fig.id)
    df["machine"] = f"{platform.machine()} {jax.devices()[0].device_kind} x{jax.device_count()}"
    total = float(df["predicted_run_s"].sum())
    print(f"{fig.id} {args.profile}: predicted {total:.0f} s = {total / 3600:.2f} h on {df['machine'][0]} "
          f"(runs one after another; compilation excluded)")
    if args.out:
        df.to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
