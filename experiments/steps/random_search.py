"""Post-step ``random_search``: random search as a method of a figure (figure 6).

For every seed (setting ``seeds``; default: the figure's seeds for the profile) it samples
``num_configs`` configurations uniformly in the task's ``search_space`` (a box in the
unconstrained theta space, e.g. log learning rates and momentum / width logits) with
``jax.random.key(seed)``, and scores each by the task's own evaluation: the mean over the
task's fixed evaluation runs (``task.eval_keys``) of the full-horizon meta-objective from a
fresh inner initialisation (`pes.search.mean_objective`).  So random search and the ES/PES
runs' logged ``meta_objective`` are measured on the same inner runs.  Scoring is batched
(`pes.search.score_configs`: ``vmap`` over ``chunk_size`` configurations per compiled call);
finished chunks are kept in ``<fig_dir>/random_search_partial/`` so an interrupted search
resumes where it stopped.

Rows (estimator ``random_search``, run_id ``random_search-seed<s>``, ``trunc_len`` = T,
``outer_step`` = configurations scored so far, ``inner_steps`` = that times T):

* ``meta_objective``: the score of the configuration just scored (+inf if it diverged);
* ``best_meta_objective``: the best score so far;
* ``total_compute``: inner steps spent so far, configurations x runs x T (every step random
  search spends; the paper's plot counts T per configuration, i.e. 1/runs of this).

Table ``random_search_configs`` (``<fig_dir>/random_search_configs.csv``): seed, configuration
index, score and every theta entry.

Settings: ``num_configs`` (required, >= 1: the budget per seed), ``chunk_size`` (default 8;
does not change results), ``seeds`` (default null: the figure's), ``overrides``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from typing import NamedTuple

import jax
import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from experiments import config, io, steps
from pes import results, search


class Plan(NamedTuple):
    settings: dict
    cfg: object
    built: object
    seeds: list[int]


def check(s: dict, where: str) -> dict:
    if not steps.is_int(s["num_configs"], 1):
        raise config.ConfigError(
            f"{where}.num_configs={s['num_configs']!r} is invalid (an empty random-search budget); "
            "allowed: an integer >= 1 (configurations per seed)"
        )
    steps.check_int(s, "chunk_size", 1, where)
    seeds = s["seeds"]
    if seeds is not None and (
        not isinstance(seeds, list) or not seeds or not all(steps.is_int(x, 0) for x in seeds)
    ):
        raise config.ConfigError(
            f"{where}.seeds={seeds!r} is invalid; allowed: null or a list of integers >= 0"
        )
    return s


def _figure_seeds(ctx: steps.Context) -> list[int]:
    """The figure's seeds under the profile (its ``seed`` when it lists none)."""
    seeds = ctx.fig.get("seeds")
    if seeds is None:
        return [int(ctx.task_config().seed)]
    seeds = OmegaConf.to_container(seeds, resolve=True) if not isinstance(seeds, list) else seeds
    if isinstance(seeds, dict):
        seeds = seeds[ctx.profile]
    return [int(x) for x in seeds]


def prepare(ctx: steps.Context, s: dict) -> Plan:
    cfg = ctx.task_config(s["overrides"])
    built = config.build(cfg)
    steps.require(built.task, ("search_space", "eval_keys"), "random_search", str(ctx.fig.id))
    if built.task.system.horizon is None:
        raise config.ConfigError(f"{ctx.fig.id}: random_search needs a task with a finite horizon")
    seeds = s["seeds"] if s["seeds"] is not None else _figure_seeds(ctx)
    return Plan(s, cfg, built, list(seeds))


def inputs(ctx: steps.Context, plan: Plan) -> dict:
    return dict(steps.task_inputs(plan.cfg, plan.built.task), seeds=plan.seeds)


def _stamp(plan: Plan, seed: int) -> str:
    data = dict(
        task=steps.task_inputs(plan.cfg, plan.built.task),
        num_configs=plan.settings["num_configs"],
        seed=seed,
    )
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def scorer(task):
    """One compiled scoring call for a chunk of configurations (shared by every seed)."""
    score = search.mean_objective(task.system, task.eval_keys)
    return jax.jit(lambda configs: search.score_configs(score, configs, jax.tree.leaves(configs)[0].shape[0]))


def search_seed(ctx: steps.Context, plan: Plan, seed: int, run) -> tuple[np.ndarray, np.ndarray]:
    """(configurations as flat vectors (n, P), scores (n,)) of one seed, resuming finished chunks."""
    s, task = plan.settings, plan.built.task
    n, chunk = s["num_configs"], s["chunk_size"]
    low, high = task.search_space
    configs = search.uniform_configs(jax.random.key(seed), low, high, n, like=task.theta_init)
    partial = ctx.fig_dir / "random_search_partial" / f"seed{seed}.npz"
    stamp = _stamp(plan, seed)
    scores = np.full(n, np.nan)
    done = 0
    if partial.exists():
        with np.load(partial) as saved:
            if str(saved["stamp"]) == stamp:
                done = int(saved["done"])
                scores[:done] = saved["scores"][:done]
    start = time.perf_counter()
    for lo in range(done, n, chunk):
        hi = min(lo + chunk, n)
        part = jax.tree.map(lambda x, lo=lo, hi=hi: x[lo:hi], configs)
        if hi - lo < chunk:  # pad the last chunk so it reuses the compiled call
            part = jax.tree.map(
                lambda x, m=chunk - (hi - lo): np.concatenate([x, np.repeat(x[:1], m, 0)]), part
            )
        scores[lo:hi] = np.asarray(run(part))[: hi - lo]
        partial.parent.mkdir(parents=True, exist_ok=True)
        np.savez(partial.with_suffix(".tmp.npz"), stamp=stamp, done=hi, scores=scores)
        partial.with_suffix(".tmp.npz").replace(partial)
        if ctx.progress:
            rate = (hi - done) / max(time.perf_counter() - start, 1e-9)
            print(f"  random search seed {seed}: {hi}/{n} configurations ({rate:.2f}/s)", file=sys.stderr)
    # flat vectors in ravel_pytree's order (leaves in tree order, each in C order)
    flat = np.concatenate(
        [np.asarray(x, np.float64).reshape(n, -1) for x in jax.tree.leaves(configs)], axis=1
    )
    return flat, scores


def compute(ctx: steps.Context, plan: Plan) -> steps.StepOutput:
    task, fig_id = plan.built.task, str(ctx.fig.id)
    config.use_x64(plan.cfg)
    horizon = int(task.system.horizon)
    num_runs = int(task.eval_keys.shape[0])
    per_config = search.score_cost(horizon, num_runs)
    records, tables = [], []
    timing = {}
    run = scorer(task)
    for seed in plan.seeds:
        t0 = time.perf_counter()
        flat, scores = search_seed(ctx, plan, seed, run)
        timing[f"seed{seed}_wall_time_s"] = time.perf_counter() - t0
        best = search.best_so_far(scores)
        info = steps.info_row(
            fig_id, task.name, f"random_search-seed{seed}", "random_search", seed, trunc_len=horizon
        )
        for i, (value, b) in enumerate(zip(scores, best), 1):
            at = dict(info, outer_step=i, inner_steps=i * horizon)
            records += [
                dict(at, metric="meta_objective", value=float(value)),
                dict(at, metric="best_meta_objective", value=float(b)),
                dict(at, metric="total_compute", value=float(i * per_config)),
            ]
        table = pd.DataFrame(flat, columns=[f"theta/{j}" for j in range(flat.shape[1])])
        table.insert(0, "score", scores)
        table.insert(0, "config", np.arange(1, len(scores) + 1))
        table.insert(0, "seed", seed)
        tables.append(table)
    facts = dict(
        timing,
        num_runs_per_config=num_runs,
        inner_steps_per_config=per_config,
        nonfinite_scores=int(sum(int(np.sum(~np.isfinite(t["score"]))) for t in tables)),
        data_origin=task.dataset.origin if task.dataset is not None else None,
        git_commit=io.git_commit(config.ROOT),
    )
    return steps.StepOutput(
        results.frame(records), {"random_search_configs": pd.concat(tables, ignore_index=True)}, facts
    )


STEP = steps.register(
    steps.PostStep(
        name="random_search",
        summary="random search in the task's search space, scored on the task's evaluation runs",
        defaults={"num_configs": steps.REQUIRED, "chunk_size": 8, "seeds": None},
        check=check,
        prepare=prepare,
        inputs=inputs,
        compute=compute,
        non_result=("chunk_size",),
    )
)
