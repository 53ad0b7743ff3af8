"""Post-steps of figure 10, the estimator comparison (``experiments.estimator_measurements`` computes).

``truncation_variance``: per task, the per-truncation gradient variance of PES, NRES,
GPES-K and truncated ES at the task's initial theta (W sweep x particle settings, GPES-K
noise-block sweep, full-ES reference).  Settings::

    tasks   label -> {overrides: [Hydra overrides composing the task], sigma, num_particles,
            trunc_lens, estimators (default: pes, nres, gpes, es), gpes_factor, settings,
            noise_sweep ({trunc_len, noise_every} or null), chains, episodes,
            ground_truth_particles} (see `estimator_measurements.variance_configs`)
    batch_size   chains per vmapped batch (null: all at once; memory only)

Rows: `estimator_measurements.measure_variance`'s (run ids ``var-<label>-...``); extra table
``variance.csv`` (one row per configuration with its setting and noise block length).
Progress is kept per task in ``<fig_dir>/steps/truncation_variance/<label>.json`` so an
interrupted step resumes.

``timing``: every run's seconds per outer iteration, its compiled training step timed
round-robin with the other runs of the same task in one process (the same machine load for
each), and rows ``wall_clock_s`` = init + outer_step x s_per_step at every logged step of
every run (plus ``s_per_step``, ``s_per_step_spread``, ``init_s`` at step 0).  Settings::

    rounds          round-robin rounds (the median is kept)
    steps_per_call  task label (the run id's first part) -> outer steps per timed call

The load averages before and after are recorded in the step's JSON (they matter: timings on
a shared machine are inflated; the interleaving keeps the comparison fair, not absolute).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, NamedTuple

import jax
import pandas as pd

from experiments import config, estimator_measurements, io, steps
from pes import outer, results


class Plan(NamedTuple):
    settings: dict
    tasks: dict  # label -> (cfg, task, spec)


def check_variance(s: dict, where: str) -> dict:
    specs = s["tasks"]
    if not isinstance(specs, dict) or not specs:
        raise config.ConfigError(
            f"{where}.tasks={specs!r} is invalid; allowed: a mapping label -> sweep settings"
        )
    for label, spec in specs.items():
        if not isinstance(label, str) or not re.fullmatch(r"[a-z0-9_]+", label):
            raise config.ConfigError(
                f"{where}.tasks key {label!r} is invalid; allowed: lowercase letters, digits, '_'"
            )
        if not isinstance(spec, dict):
            raise config.ConfigError(
                f"{where}.tasks.{label}={spec!r} is invalid; allowed: a mapping of settings"
            )
        over = spec.get("overrides", [])
        if not isinstance(over, list) or not all(isinstance(o, str) and "=" in o for o in over):
            raise config.ConfigError(
                f"{where}.tasks.{label}.overrides={over!r} is invalid; allowed: Hydra overrides"
            )
    bs = s["batch_size"]
    if bs is not None and not steps.is_int(bs, 1):
        raise config.ConfigError(f"{where}.batch_size={bs!r} is invalid; allowed: null or an integer >= 1")
    return s


def _task(ctx: steps.Context, overrides: list[str]):
    cfg = ctx.task_config(overrides)
    return cfg, config.make_task(cfg)


def prepare_variance(ctx: steps.Context, s: dict) -> Plan:
    out = {}
    for label, spec in s["tasks"].items():
        cfg, task = _task(ctx, [*s["overrides"], *spec.get("overrides", [])])
        if task.system.horizon is None:
            raise config.ConfigError(
                f"truncation_variance.tasks.{label}: task {task.name} has no finite horizon"
            )
        full = {
            "estimators": list(estimator_measurements.ESTIMATORS),
            "noise_sweep": None,
            **spec,
            "batch_size": s["batch_size"],
        }
        try:
            estimator_measurements.check_variance_spec(
                full, int(task.system.horizon), f"truncation_variance.tasks.{label}"
            )
        except ValueError as err:
            raise config.ConfigError(str(err)) from err
        out[label] = (cfg, task, full)
    return Plan(s, out)


def inputs_variance(ctx: steps.Context, plan: Plan) -> dict:
    return {label: steps.task_inputs(cfg, task) for label, (cfg, task, _) in plan.tasks.items()}


def compute_variance(ctx: steps.Context, plan: Plan) -> steps.StepOutput:
    frames, details, walls = [], [], {}
    progress_dir = ctx.fig_dir / "steps" / "truncation_variance"
    for label, (cfg, task, spec) in plan.tasks.items():
        config.use_x64(cfg)
        path = progress_dir / f"{label}.json"
        stamp = {"spec": spec, "task": steps.task_inputs(cfg, task)}
        saved = io.read_json(path) or {}
        done, reference_done = {}, None
        if saved.get("stamp") == _jsonable(stamp):
            done = {tuple(r["key"]): r["stats"] for r in saved.get("done", [])}
            reference_done = saved.get("reference")
        record = {"stamp": _jsonable(stamp), "done": [{"key": list(k), "stats": v} for k, v in done.items()]}
        if reference_done is not None:
            record["reference"] = reference_done

        def keep(vc, st, record=record, path=path):
            record["done"].append({"key": list(vc[:4]), "stats": st})
            io.write_json(path, record)

        def keep_reference(summary, record=record, path=path):
            record["reference"] = summary
            io.write_json(path, record)

        t0 = time.perf_counter()
        rows, detail = estimator_measurements.measure_variance(
            task,
            spec,
            jax.random.key(int(cfg.seed)),
            task_label=label,
            seed=int(cfg.seed),
            log=ctx.log,
            done=done,
            on_result=keep,
            reference_done=reference_done,
            on_reference=keep_reference,
        )
        walls[label] = time.perf_counter() - t0
        rows["figure"] = str(ctx.fig.id)
        frames.append(rows)
        details.append(detail)
    table = pd.concat(frames, ignore_index=True)
    return steps.StepOutput(
        results.validate(table),
        {"variance": pd.concat(details, ignore_index=True)},
        {"task_wall_time_s": walls, "load_average_end": estimator_measurements.load_average()},
    )


def _jsonable(x):
    """``x`` as it reads back from JSON (so a saved stamp compares equal to a fresh one)."""
    return json.loads(json.dumps(x, default=str))


VARIANCE = steps.register(
    steps.PostStep(
        name="truncation_variance",
        summary="per-truncation gradient variance of PES, NRES, GPES-K and truncated ES (figure 10)",
        defaults={"tasks": steps.REQUIRED, "batch_size": None},
        check=check_variance,
        prepare=prepare_variance,
        inputs=inputs_variance,
        compute=compute_variance,
        non_result=("batch_size",),
    )
)


# ----------------------------------------------------------------------------- timing


def base_id(run_id: str) -> str:
    """A run id without its ``-seed<s>`` suffix (the runs timed as one)."""
    return re.sub(r"-seed\d+$", "", run_id)


def task_label(run_id: str) -> str:
    return run_id.split("-", 1)[0]


def check_timing(s: dict, where: str) -> dict:
    if not steps.is_int(s["rounds"], 1):
        raise config.ConfigError(f"{where}.rounds={s['rounds']!r} is invalid; allowed: an integer >= 1")
    spc = s["steps_per_call"]
    if not isinstance(spc, dict) or not spc or any(not steps.is_int(v, 1) for v in spc.values()):
        raise config.ConfigError(
            f"{where}.steps_per_call={spc!r} is invalid; allowed: a mapping task label -> integer >= 1"
        )
    return s


def prepare_timing(ctx: steps.Context, s: dict) -> dict:
    groups: dict[str, list] = {}
    for run in ctx.runs:
        label = task_label(run.run_id)
        if label not in s["steps_per_call"]:
            raise config.ConfigError(
                f"timing.steps_per_call has no entry for task label {label!r} (run {run.run_id}); "
                f"allowed: add {label}: <steps>"
            )
        b = base_id(run.run_id)
        if b not in [r[0] for r in groups.get(label, [])]:
            groups.setdefault(label, []).append((b, run))
    return {"settings": s, "groups": groups}


def inputs_timing(ctx: steps.Context, plan: dict) -> dict:
    # a timing is a measurement of the machine: rerun it whenever the runs or settings change
    return {"runs": {b: run.fingerprint for g in plan["groups"].values() for b, run in g}}


def compute_timing(ctx: steps.Context, plan: dict) -> steps.StepOutput:
    s = plan["settings"]
    load_before = estimator_measurements.load_average()
    timed: dict[str, estimator_measurements.Timed] = {}
    for label, group in plan["groups"].items():
        entries = {}
        for b, run in group:
            config.set_x64(run.x64)  # the run's precision, as when its objects were built
            steps_per_call = s["steps_per_call"][label]
            est, opt, theta = run.built.estimator, run.built.optimizer, run.built.task.theta_init

            def init(est=est, opt=opt, theta=theta, seed=run.seed):
                return outer.init_state(jax.random.key(seed), theta, est, opt)

            entries[b] = (jax.jit(init), outer.make_chunk(est, opt, log_every=steps_per_call, num_logs=1))
        ctx.log(
            f"[timing] {label}: {len(entries)} runs interleaved, {s['rounds']} rounds "
            f"(load {estimator_measurements.load_average()})"
        )
        timed.update(
            estimator_measurements.interleaved_timing(
                entries, rounds=s["rounds"], steps_per_call=s["steps_per_call"][label], log=ctx.log
            )
        )
    rows = estimator_measurements.wall_clock_rows(ctx.run_rows(), timed, base_id)
    rows["figure"] = str(ctx.fig.id)
    info = {
        "load_average_before": load_before,
        "load_average_after": estimator_measurements.load_average(),
        "timed": {k: t._asdict() for k, t in timed.items()},
    }
    return steps.StepOutput(results.validate(rows), {}, info)


TIMING = steps.register(
    steps.PostStep(
        name="timing",
        summary="seconds per outer iteration of each run, interleaved in one process (figure 10)",
        defaults={"rounds": 5, "steps_per_call": steps.REQUIRED},
        check=check_timing,
        prepare=prepare_timing,
        inputs=inputs_timing,
        compute=compute_timing,
    )
)


__all__: list[Any] = ["VARIANCE", "TIMING"]
