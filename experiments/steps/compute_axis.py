"""Post-step ``compute_axis``: the total-compute axis (and a best-so-far curve) of every run.

The paper's hyperparameter figures (6 and 9) plot against "total compute": inner steps
spent by the particles, N K per outer iteration for ES and PES (evaluations and truncated
ES's mean trajectory are not counted, as in the paper's plots).  For every logged step of
every run this step writes

* ``total_compute`` = ``inner_steps`` x ``num_particles`` (= outer steps x N x K);
* with ``best_of: <metric>``: ``best_<metric>``, the running minimum of that metric over the
  run's log points so far (non-finite values count as +inf), e.g. ``best_meta_objective``.

Settings: ``best_of`` (default null), ``overrides`` (unused).  Rows keep the run's columns.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from experiments import config, steps
from pes import results


class Plan(NamedTuple):
    settings: dict


def check(s: dict, where: str) -> dict:
    best = s["best_of"]
    if best is not None and (not isinstance(best, str) or not best):
        raise config.ConfigError(f"{where}.best_of={best!r} is invalid; allowed: null or a metric name")
    return s


def prepare(ctx: steps.Context, s: dict) -> Plan:
    return Plan(s)


def inputs(ctx: steps.Context, plan: Plan) -> dict:
    runs = ctx.run_rows()
    cols = ["run_id", "seed", "outer_step", "inner_steps", "num_particles"]
    keep = runs[cols].drop_duplicates().sort_values(cols)
    out = {"steps": keep.to_numpy().tolist()}
    if plan.settings["best_of"]:
        sub = runs[runs["metric"] == plan.settings["best_of"]].sort_values(["run_id", "seed", "outer_step"])
        out["values"] = sub["value"].to_numpy().tolist()
    return out


def compute(ctx: steps.Context, plan: Plan) -> steps.StepOutput:
    runs = ctx.run_rows()
    best_of = plan.settings["best_of"]
    records = []
    for (rid, seed), g in runs.groupby(["run_id", "seed"], sort=True):
        info = {c: g.iloc[0][c] for c in results.RUN_COLUMNS}
        at = (
            g[["outer_step", "inner_steps", "num_particles"]]
            .drop_duplicates("outer_step")
            .sort_values("outer_step")
        )
        for step, inner, n in at.itertuples(index=False):
            records.append(
                dict(
                    info,
                    outer_step=int(step),
                    inner_steps=int(inner),
                    metric="total_compute",
                    value=float(inner) * float(n),
                )
            )
        if best_of:
            sub = g[g["metric"] == best_of].sort_values("outer_step")
            if sub.empty:
                raise config.ConfigError(
                    f"compute_axis: run {rid} (seed {seed}) logged no metric {best_of!r}"
                )
            values = sub["value"].to_numpy(np.float64)
            best = np.minimum.accumulate(np.where(np.isfinite(values), values, np.inf))
            for (step, inner), b in zip(sub[["outer_step", "inner_steps"]].itertuples(index=False), best):
                records.append(
                    dict(
                        info,
                        outer_step=int(step),
                        inner_steps=int(inner),
                        metric=f"best_{best_of}",
                        value=float(b),
                    )
                )
    return steps.StepOutput(results.frame(records) if records else pd.DataFrame(columns=results.COLUMNS))


STEP = steps.register(
    steps.PostStep(
        name="compute_axis",
        summary="total compute (N K inner steps per outer iteration) and a best-so-far curve per run",
        defaults={"best_of": None},
        check=check,
        prepare=prepare,
        inputs=inputs,
        compute=compute,
    )
)
