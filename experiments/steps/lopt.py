"""Post-steps of the learned-optimizer figure (7): ``adam_baseline`` and ``inner_curves``.

Both use the task's fixed evaluation runs (``task.eval_keys``: the inner seeds the runs'
``meta_loss_eval`` uses), so every method is compared on the same inner trainings.

``adam_baseline`` (settings ``learning_rates`` (required), ``curve_every`` (default 10),
``final_window`` (default 50), ``overrides``): Adam on the inner task at every learning
rate (``task.baseline_curve``).  Rows (estimator ``adam``, outer step 0):

* run_id ``adam-lr<lr>``: ``meta_loss_eval`` (mean clipped loss over the evaluation runs
  and steps) and ``final_loss_eval`` (the same over the last ``final_window`` steps);
* run_id ``adam-tuned``, the learning rate with the lowest ``meta_loss_eval``: the same
  two metrics, ``learning_rate``, ``dataset/<name>`` = 1 (which images were used) and its
  inner training curve: metric ``inner_loss`` at ``outer_step`` = ``inner_steps`` = t, the
  mean over the evaluation runs and over the window of ``curve_every`` steps ending at t.

``inner_curves`` (settings ``curve_every`` (default 10), ``overrides``): the same curve
(``task.inner_curve``) for every run's final learned optimizer (read from its checkpoint;
the run's columns, metric ``inner_loss``) and for the initial learned optimizer of every
seed (run_id ``init-s<seed>``, estimator ``init``).  Recomputed when a checkpoint changes.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import artefacts, config, io, runner, steps
from pes import outer, results


class Plan(NamedTuple):
    settings: dict
    cfg: object
    built: object


def check_adam(s: dict, where: str) -> dict:
    lrs = s["learning_rates"]
    ok = isinstance(lrs, list) and lrs and all(isinstance(x, (int, float)) and x > 0 for x in lrs)
    if not ok or any(isinstance(x, bool) for x in lrs):
        raise config.ConfigError(f"{where}.learning_rates={lrs!r} is invalid; allowed: a list of numbers > 0")
    s["learning_rates"] = [float(x) for x in lrs]
    steps.check_int(s, "curve_every", 1, where)
    steps.check_int(s, "final_window", 1, where)
    return s


def check_curves(s: dict, where: str) -> dict:
    steps.check_int(s, "curve_every", 1, where)
    return s


def prepare_with(fields: tuple[str, ...], name: str):
    def prepare(ctx: steps.Context, s: dict) -> Plan:
        cfg = ctx.task_config(s["overrides"])
        built = config.build(cfg)
        steps.require(built.task, fields, name, str(ctx.fig.id))
        return Plan(s, cfg, built)

    return prepare


def curve_rows(info: dict, losses: np.ndarray, every: int) -> list[dict]:
    """Window means of the (runs, T) per-step losses, one row per window."""
    mean = np.mean(np.asarray(losses, np.float64), axis=0)
    num = len(mean) // every
    windows = mean[: num * every].reshape(num, every).mean(axis=1)
    return [
        dict(
            info, outer_step=(i + 1) * every, inner_steps=(i + 1) * every, metric="inner_loss", value=float(v)
        )
        for i, v in enumerate(windows)
    ]


# ----------------------------------------------------------------------------- adam_baseline


def adam_grid(task, learning_rates: list[float]) -> np.ndarray:
    """(num_lrs, runs, T) per-step clipped losses of Adam at every learning rate."""
    keys, curve = task.eval_keys, task.baseline_curve

    @jax.jit
    def at(lr):
        return jax.vmap(lambda k: curve(optax.adam(lr), k))(keys)

    return np.stack([np.asarray(at(jnp.float32(lr))) for lr in learning_rates])


def inputs_adam(ctx: steps.Context, plan: Plan) -> dict:
    return steps.task_inputs(plan.cfg, plan.built.task)


def compute_adam(ctx: steps.Context, plan: Plan) -> steps.StepOutput:
    s, task, fig_id = plan.settings, plan.built.task, str(ctx.fig.id)
    config.use_x64(plan.cfg)
    lrs = s["learning_rates"]
    grid = adam_grid(task, lrs)  # (L, runs, T)
    meta_losses = grid.mean(axis=(1, 2))
    window = min(s["final_window"], grid.shape[2])
    at0 = dict(outer_step=0, inner_steps=0)
    records: list[dict] = []
    for lr, losses, value in zip(lrs, grid, meta_losses):
        info = steps.info_row(fig_id, task.name, f"adam-lr{lr:g}", "adam", 0, **at0)
        records.append(dict(info, metric="meta_loss_eval", value=float(value)))
        records.append(dict(info, metric="final_loss_eval", value=float(losses[:, -window:].mean())))
    best = int(np.nanargmin(meta_losses))
    info = steps.info_row(fig_id, task.name, "adam-tuned", "adam", 0, **at0)
    records += [
        dict(info, metric="meta_loss_eval", value=float(meta_losses[best])),
        dict(info, metric="final_loss_eval", value=float(grid[best][:, -window:].mean())),
        dict(info, metric="learning_rate", value=lrs[best]),
        # constant marker: which dataset produced every row (the plot names a stand-in)
        dict(info, metric=f"dataset/{task.dataset.name}", value=1.0),
    ]
    records += curve_rows(
        steps.info_row(fig_id, task.name, "adam-tuned", "adam", 0), grid[best], s["curve_every"]
    )
    facts = {"tuned_learning_rate": lrs[best], "data_origin": task.dataset.origin}
    return steps.StepOutput(results.frame(records), {}, facts)


# ----------------------------------------------------------------------------- inner_curves


def final_theta(spec: config.RunSpec) -> object:
    """The meta-parameters in a finished run's checkpoint."""
    path = spec.run_dir / runner.CKPT
    built = spec.built
    if not path.exists():
        raise config.ConfigError(
            f"inner_curves: run {spec.run_id} has no checkpoint {path}; rerun the figure"
        )
    template = jax.eval_shape(
        lambda: outer.init_state(jax.random.key(0), built.task.theta_init, built.estimator, built.optimizer)
    )
    state, _ = io.load_checkpoint(path, template)
    return state.theta


def inputs_curves(ctx: steps.Context, plan: Plan) -> dict:
    checkpoints = {}
    for spec in ctx.runs:
        path = spec.run_dir / runner.CKPT
        checkpoints[spec.run_id] = artefacts.file_digest(path) if path.exists() else None
    return dict(steps.task_inputs(plan.cfg, plan.built.task), checkpoints=checkpoints)


def compute_curves(ctx: steps.Context, plan: Plan) -> steps.StepOutput:
    every, task, fig_id = plan.settings["curve_every"], plan.built.task, str(ctx.fig.id)
    config.use_x64(plan.cfg)
    keys = task.eval_keys
    curve = jax.jit(jax.vmap(task.inner_curve, in_axes=(None, 0)))
    runs = ctx.run_rows()
    records: list[dict] = []
    seen_seeds = set()
    for spec in ctx.runs:
        seed = spec.seed
        if seed not in seen_seeds:  # the initial learned optimizer of this seed
            seen_seeds.add(seed)
            info = steps.info_row(fig_id, task.name, f"init-s{seed}", "init", seed)
            records += curve_rows(info, np.asarray(curve(spec.built.task.theta_init, keys)), every)
        theta = final_theta(spec)
        first = runs[runs["run_id"] == spec.run_id].iloc[0]
        info = {c: first[c] for c in results.RUN_COLUMNS}
        records += curve_rows(info, np.asarray(curve(theta, keys)), every)
    return steps.StepOutput(results.frame(records))


ADAM = steps.register(
    steps.PostStep(
        name="adam_baseline",
        summary="Adam on the inner task, learning rate tuned on the evaluation runs",
        defaults={"learning_rates": steps.REQUIRED, "curve_every": 10, "final_window": 50},
        check=check_adam,
        prepare=prepare_with(("eval_keys", "baseline_curve", "dataset"), "adam_baseline"),
        inputs=inputs_adam,
        compute=compute_adam,
    )
)
CURVES = steps.register(
    steps.PostStep(
        name="inner_curves",
        summary="inner training curves of the runs' final and initial learned optimizers",
        defaults={"curve_every": 10},
        check=check_curves,
        prepare=prepare_with(("eval_keys", "inner_curve"), "inner_curves"),
        inputs=inputs_curves,
        compute=compute_curves,
    )
)
