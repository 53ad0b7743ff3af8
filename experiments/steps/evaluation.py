"""Post-step ``evaluation``: every run's final theta (and the task's theta_init) evaluated by
fresh full-horizon trainings (``task.full_run``; figure 5).

Settings:

    num_runs    fresh trainings per theta (required)
    key_seed    seed of their keys, the same for every theta (common random numbers;
                default 12345)
    overrides   Hydra overrides of the task config (default none)

Rows, per run (its run columns, at its last logged outer step) and for ``init`` (estimator
``init``, outer step 0, plus its ``theta/<i>``): for every metric ``m`` of ``full_run``
the mean ``m`` and its standard error ``m_se`` over the trainings.
"""

from __future__ import annotations

import math
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from experiments import config, steps
from pes import results


class Plan(NamedTuple):
    settings: dict
    cfg: object
    built: object


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


def check(s: dict, where: str) -> dict:
    steps.check_int(s, "num_runs", 1, where)
    steps.check_int(s, "key_seed", 0, where)
    return s


def prepare(ctx: steps.Context, s: dict) -> Plan:
    cfg = ctx.task_config(s["overrides"])
    built = config.build(cfg)
    steps.require(built.task, ("full_run",), "evaluation", str(ctx.fig.id))
    return Plan(s, cfg, built)


def final_thetas(runs: pd.DataFrame, dim: int) -> dict[str, tuple[pd.Series, np.ndarray]]:
    """run_id -> (its last row, its final theta) from the runs' rows (``theta/0..``)."""
    names = [f"theta/{i}" for i in range(dim)]
    out = {}
    for rid, sub in runs.groupby("run_id"):
        last = sub[sub["outer_step"] == sub["outer_step"].max()]
        values = last.set_index("metric")["value"]
        missing = [n for n in names if n not in values]
        if missing:
            raise config.ConfigError(f"evaluation: run {rid} logged no {missing[0]} at its last step")
        out[str(rid)] = (last.iloc[0], values[names].to_numpy(np.float64))
    return out


def _thetas(ctx: steps.Context, plan: Plan) -> dict[str, np.ndarray]:
    dim = int(np.size(plan.built.task.theta_init))
    thetas = {rid: theta for rid, (_, theta) in final_thetas(ctx.run_rows(), dim).items()}
    thetas["init"] = np.asarray(plan.built.task.theta_init, np.float64).reshape(-1)
    return thetas


def inputs(ctx: steps.Context, plan: Plan) -> dict:
    return dict(steps.task_inputs(plan.cfg, plan.built.task), thetas=_thetas(ctx, plan))


def compute(ctx: steps.Context, plan: Plan) -> steps.StepOutput:
    s, task = plan.settings, plan.built.task
    config.use_x64(plan.cfg)
    thetas = _thetas(ctx, plan)
    finals = final_thetas(ctx.run_rows(), len(thetas["init"]))
    names = list(thetas)
    values = evaluate_thetas(
        task.full_run,
        np.stack([thetas[n] for n in names]),
        s["num_runs"],
        len(names),
        jax.random.key(s["key_seed"]),
    )
    records = []
    for i, rid in enumerate(names):
        if rid == "init":
            info = steps.info_row(str(ctx.fig.id), task.name, "init", "init", 0)
            step, inner = 0, 0
            records += [
                dict(info, outer_step=0, inner_steps=0, metric=f"theta/{j}", value=float(x))
                for j, x in enumerate(thetas[rid])
            ]
        else:
            row = finals[rid][0]
            info = {c: row[c] for c in results.RUN_COLUMNS}
            step, inner = int(row["outer_step"]), int(row["inner_steps"])
        for metric, v in sorted(values.items()):
            for suffix, value in (("", v[i, 0]), ("_se", v[i, 1])):
                records.append(
                    dict(info, outer_step=step, inner_steps=inner, metric=metric + suffix, value=float(value))
                )
    return steps.StepOutput(results.frame(records), {}, {"data_origin": task.dataset and task.dataset.origin})


STEP = steps.register(
    steps.PostStep(
        name="evaluation",
        summary="final thetas evaluated by fresh full-horizon trainings",
        defaults={"num_runs": steps.REQUIRED, "key_seed": 12345},
        check=check,
        prepare=prepare,
        inputs=inputs,
        compute=compute,
    )
)
