"""Post-step ``variance``: the PES variance study at fixed theta (figure 4).

Not an optimisation: with theta fixed at the task's theta_init, the PES estimate of the
whole-sequence gradient is the sum of T/K per-unroll estimates; its normalised variance
is measured against a full-sequence antithetic-ES ground truth and against the autodiff
gradient.  Settings (per-profile blocks ``quick:``/``paper:``; ``variance.<key>=<value>``
on the command line):

    scenarios               name -> Hydra overrides of one scenario (e.g. task.scenario=random);
                            each is composed from the figure's base + profile + these (required)
    sigma                   perturbation standard deviation (the paper: 1e-3)
    trunc_lens              truncation lengths K (each must divide T = task.sequence_length)
    num_particles           N of the main curves (the paper: 1000): the largest particle count
    particle_counts         N values of the per-N curves (the paper's appendix: 10, 30, 100, 1000)
    num_repeats             independent estimates at the largest N (the paper: 50)
    ground_truth_particles  N of the full-sequence antithetic-ES ground truth (the paper: 5000)
    ground_truth_chunks     equal chunks the ground truth is computed in (noise-floor estimate)
    batch_pairs             pair estimates per vmapped batch (memory only, not fingerprinted)
    estimator               pes (default) or pes_a (PES-A: analytic current-unroll gradient)
    overrides               Hydra overrides of every scenario (default none)

For every scenario and K, ``num_repeats * max(particle_counts) / 2`` independent one-pair
PES estimates are computed in one compiled call (`pes.variance.pair_estimates`) and
averaged in disjoint groups into N-particle estimates for every N (valid because the
system is deterministic).  Each scenario keeps its progress in
``<fig_dir>/steps/variance/<scenario>/`` (rows appended per K, the ground truth cached), so
an interrupted study resumes where it stopped.

Rows (results schema; ``<s>`` = scenario).  Per (scenario, N, K): run_id
``<s>-n<N>-k<K>``, estimator ``pes`` (or ``pes_a``), trunc_len K, num_particles N,
outer_step = number of unrolls T/K, inner_steps = T, metrics

    normalized_variance/<s>          mean_r ||g_r - g_ES||^2 / ||g_ES||^2 (the paper's y-axis)
    normalized_variance_se/<s>       its standard error over the repeats
    normalized_variance_exact/<s>    the same against the autodiff gradient (no floor)
    normalized_variance_exact_se/<s>
    es_variance_analytic/<s>         (P + 1) / (N / 2): normalized_variance_exact at one unroll
    es_variance_analytic_vs_ground_truth/<s>  (v + f) / (1 + f) with v that and f the ground
                                     truth's (P + 1) / (N_gt / 2): normalized_variance at one unroll
    num_repeats/<s>                  independent N-particle estimates averaged

Per scenario, run_id ``<s>-ground-truth``, estimator ``es``, trunc_len T, num_particles =
ground-truth N, outer_step 1: ``ground_truth_noise_floor/<s>`` (its relative error
estimated from its chunks), ``ground_truth_noise_floor_analytic/<s>`` ((P + 1) /
(N_gt / 2)), ``ground_truth_error_exact/<s>`` (its relative error against autodiff),
``grad_norm_sq/<s>``, ``grad_norm_sq_exact/<s>``, ``loss/<s>``, ``num_params/<s>``,
``sequence_length/<s>``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from experiments import artefacts, config, figure_schema, io, steps
from pes import results, systems, variance

CSV, GT, META = "metrics.csv", "ground_truth.npz", "scenario.json"
ESTIMATORS = ("pes", "pes_a")  # the per-unroll estimators the protocol can sum


class Scenario(NamedTuple):
    name: str
    cfg: DictConfig
    task: Any
    fingerprint: str


class Plan(NamedTuple):
    settings: dict
    scenarios: list[Scenario]


# ----------------------------------------------------------------------------- settings


def check(s: dict, where: str) -> dict:
    """Validate and normalise the protocol settings."""
    scen = s["scenarios"]
    if not isinstance(scen, dict) or not scen:
        raise config.ConfigError(
            f"{where}.scenarios={scen!r} is invalid; allowed: a mapping name -> overrides"
        )
    for name, over in scen.items():
        figure_schema.check_id(name, f"{where}.scenarios key")
        figure_schema.check_overrides(over, f"{where}.scenarios.{name}")

    def positive_int(name, value, even=False):
        if not steps.is_int(value, 1) or (even and value % 2):
            kind = "a positive even integer" if even else "an integer >= 1"
            raise config.ConfigError(f"{where}.{name}={value!r} is invalid; allowed: {kind}")

    sigma = s["sigma"]
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
        raise config.ConfigError(f"{where}.sigma={sigma!r} is invalid; allowed: a number > 0")
    s["sigma"] = float(sigma)
    for name in ("trunc_lens", "particle_counts"):
        if not isinstance(s[name], list) or not s[name]:
            raise config.ConfigError(f"{where}.{name}={s[name]!r} is invalid; allowed: a non-empty list")
        for v in s[name]:
            positive_int(name, v, even=name == "particle_counts")
        s[name] = sorted(set(s[name]))
    positive_int("num_particles", s["num_particles"], even=True)
    if s["num_particles"] < max(s["particle_counts"]):
        raise config.ConfigError(
            f"{where}.num_particles={s['num_particles']} is invalid with particle_counts="
            f"{s['particle_counts']}; allowed: the largest particle count (the main curves use it)"
        )
    if s["num_particles"] not in s["particle_counts"]:
        s["particle_counts"] = sorted(set(s["particle_counts"]) | {s["num_particles"]})
    positive_int("num_repeats", s["num_repeats"])
    if s["num_repeats"] < 2:
        raise config.ConfigError(
            f"{where}.num_repeats={s['num_repeats']} is invalid; allowed: an integer >= 2"
        )
    positive_int("ground_truth_chunks", s["ground_truth_chunks"])
    positive_int("ground_truth_particles", s["ground_truth_particles"])
    if s["ground_truth_chunks"] < 2 or s["ground_truth_particles"] % (2 * s["ground_truth_chunks"]):
        raise config.ConfigError(
            f"{where}.ground_truth_particles={s['ground_truth_particles']} is invalid with "
            f"ground_truth_chunks={s['ground_truth_chunks']}; "
            "allowed: chunks >= 2 and particles a multiple of 2 * chunks"
        )
    positive_int("batch_pairs", s["batch_pairs"])
    steps.check_choice(s, "estimator", ESTIMATORS, where)
    s["num_pairs"] = s["num_repeats"] * max(s["particle_counts"]) // 2
    return s


def check_horizon(s: dict, horizon: int, where: str) -> None:
    bad = [k for k in s["trunc_lens"] if horizon % k]
    if bad:
        raise config.ConfigError(
            f"variance.trunc_lens has {bad[0]}, which does not divide "
            f"task.sequence_length={horizon} ({where}); allowed: divisors of the sequence length"
        )


def scenario_fingerprint(cfg: DictConfig, s: dict) -> str:
    """What one scenario's rows depend on: its config (no optimiser, estimator or training
    settings: theta is fixed) and the protocol settings (not the memory knob batch_pairs)."""
    data = OmegaConf.to_container(cfg, resolve=True)
    for key in (*config.NON_RESULT_KEYS, "hydra", "train", "outer_optimizer", "estimator"):
        data.pop(key, None)
    for key in config.NON_RESULT_PROFILE_KEYS:  # how the profile is judged, not what it computes
        data.get("profile", {}).pop(key, None)
    protocol = {k: v for k, v in s.items() if k not in ("batch_pairs", "scenarios", "overrides")}
    return artefacts.fingerprint({"cfg": data, "variance": protocol})


def prepare(ctx: steps.Context, s: dict) -> Plan:
    """Compose, build and check every scenario (no compute)."""
    scenarios = []
    for name, over in s["scenarios"].items():
        cfg = ctx.task_config([*s["overrides"], *over, f"run_id={name}"])
        task = config.make_task(cfg)
        if task.system.horizon is None:
            raise config.ConfigError(
                f"task {cfg.task.name} has no finite horizon; the variance study needs one"
            )
        check_horizon(s, int(task.system.horizon), f"scenario {name}")
        scenarios.append(Scenario(name, cfg, task, scenario_fingerprint(cfg, s)))
    return Plan(s, scenarios)


def inputs(ctx: steps.Context, plan: Plan) -> dict:
    return {"scenarios": {sc.name: sc.fingerprint for sc in plan.scenarios}}


# ----------------------------------------------------------------------------- compute


class Compiled:
    """Jitted protocol pieces, shared by every task of the same shape.

    When the task offers ``system_data`` (its system rebuilt from its data array, which
    may be traced) the data is an argument, so one compilation per K serves every
    scenario; otherwise the system is closed over.
    """

    def __init__(self, task, s: dict):
        self.shared = task.system_data is not None
        self.s = s
        static = task.system

        def system_of(data):
            return task.system_data.build(data) if self.shared else static

        def pairs(data, theta, key, trunc_len):
            return variance.pair_estimates(
                system_of(data),
                theta,
                key,
                trunc_len=trunc_len,
                sigma=s["sigma"],
                num_pairs=s["num_pairs"],
                batch_size=s["batch_pairs"],
                estimator=s["estimator"],
            )

        def ground_truth(data, theta, key):
            return variance.ground_truth(
                system_of(data),
                theta,
                key,
                sigma=s["sigma"],
                num_particles=s["ground_truth_particles"],
                num_chunks=s["ground_truth_chunks"],
            )

        def exact(data, theta, key):
            system = system_of(data)
            return jax.value_and_grad(lambda th: systems.full_objective(system, th, key, key))(theta)

        self.pairs = jax.jit(pairs, static_argnums=3)
        self.ground_truth = jax.jit(ground_truth)
        self.exact = jax.jit(exact)

    @staticmethod
    def data(task):
        return jnp.asarray(task.system_data.data) if task.system_data is not None else jnp.zeros(())


# ----------------------------------------------------------------------------- one scenario


def _info(run_id, cfg, estimator, trunc_len, sigma, num_particles) -> dict:
    return {
        "run_id": run_id,
        "figure": str(cfg.figure_id),
        "task": str(cfg.task.name),
        "estimator": estimator,
        "trunc_len": int(trunc_len),
        "sigma": float(sigma),
        "num_particles": int(num_particles),
        "seed": int(cfg.seed),
    }


def _rows(info: dict, outer_step: int, inner_steps: int, metrics: dict) -> list[dict]:
    return [
        dict(
            info,
            outer_step=int(outer_step),
            inner_steps=int(inner_steps),
            metric=name,
            value=float(value),
        )
        for name, value in metrics.items()
    ]


def _ground_truth_metrics(chunks, g_es, g_exact, loss, s: dict, horizon: int) -> dict:
    """The ground-truth rows' metrics: its noise floor, its distance to autodiff, the gradient sizes."""
    p = variance.num_params(g_es)
    floor, _ = variance.noise_floor(chunks)
    err_exact = float(variance.normalized_errors(jax.tree.map(lambda x: x[None], g_es), g_exact)[0])
    return {
        "ground_truth_noise_floor": floor,
        "ground_truth_noise_floor_analytic": variance.es_relative_variance(p, s["ground_truth_particles"]),
        "ground_truth_error_exact": err_exact,
        "grad_norm_sq": variance.squared_norm(g_es),
        "grad_norm_sq_exact": variance.squared_norm(g_exact),
        "loss": float(loss),
        "num_params": p,
        "sequence_length": horizon,
    }


def _particle_count_metrics(pairs, n: int, g_es, g_exact, s: dict) -> dict:
    """Normalised variance of the N-particle estimate (against the ground truth and autodiff)."""
    p = variance.num_params(g_es)
    est = variance.group_means(pairs, n)
    err, err_se = variance.mean_and_stderr(variance.normalized_errors(est, g_es))
    exact, exact_se = variance.mean_and_stderr(variance.normalized_errors(est, g_exact))
    return {
        "normalized_variance": err,
        "normalized_variance_se": err_se,
        "normalized_variance_exact": exact,
        "normalized_variance_exact_se": exact_se,
        "es_variance_analytic": variance.es_relative_variance(p, n),
        "es_variance_analytic_vs_ground_truth": variance.against_noisy_reference(
            variance.es_relative_variance(p, n),
            variance.es_relative_variance(p, s["ground_truth_particles"]),
        ),
        "num_repeats": jax.tree.leaves(est)[0].shape[0],
    }


def _suffixed(metrics: dict, suffix: str) -> dict:
    return {name + suffix: value for name, value in metrics.items()}


def _open_scenario(sc: Scenario, s: dict, out_dir: Path) -> tuple[dict, set] | None:
    """The scenario's run.json written as running and the run ids already logged; None if complete.

    A folder of another fingerprint (or ``resume=false``) is cleared first.
    """
    cfg, task = sc.cfg, sc.task
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = io.read_json(out_dir / META)
    same = meta is not None and meta.get("fingerprint") == sc.fingerprint and bool(cfg.resume)
    if same and meta.get("status") == "complete":
        return None
    if not same:
        for name in (CSV, GT, META):
            (out_dir / name).unlink(missing_ok=True)
    done = set()
    if (out_dir / CSV).exists() and (out_dir / CSV).stat().st_size:
        done = set(pd.read_csv(out_dir / CSV)["run_id"])
    wall_before = float(meta.get("wall_time_s", 0.0)) if same else 0.0
    meta = {
        **artefacts.provenance(),
        "scenario": sc.name,
        "fingerprint": sc.fingerprint,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "variance": s,
        "profile": str(cfg.profile.name),
        "data_source": task.dataset.origin if task.dataset else None,
        "status": "running",
        "wall_time_s": wall_before,
    }
    io.write_json(out_dir / META, meta)
    return meta, done


def run_scenario(sc: Scenario, s: dict, compiled: Compiled, out_dir: Path, log=print) -> Path:
    """Compute (or resume) one scenario's rows into ``out_dir/metrics.csv``."""
    cfg, task, scenario = sc.cfg, sc.task, sc.name
    opened = _open_scenario(sc, s, out_dir)
    if opened is None:
        return out_dir
    meta, done = opened
    start = time.perf_counter()
    horizon = int(task.system.horizon)
    gt_key, exact_key, pes_key = jax.random.split(jax.random.key(int(cfg.seed)), 3)
    data = Compiled.data(task)
    theta = task.theta_init
    suffix = f"/{scenario}"

    # Ground truth and the exact gradient (cached for resumption).
    if (out_dir / GT).exists():
        (g_es, g_exact), _ = io.load_checkpoint(out_dir / GT, (theta, theta))
    else:
        t0 = time.perf_counter()
        g_es, chunks = jax.block_until_ready(compiled.ground_truth(data, theta, gt_key))
        loss, g_exact = compiled.exact(data, theta, exact_key)
        metrics = _ground_truth_metrics(chunks, g_es, g_exact, loss, s, horizon)
        rid = f"{scenario}-ground-truth"
        if rid not in done:
            info = _info(rid, cfg, "es", horizon, s["sigma"], s["ground_truth_particles"])
            io.append_rows(out_dir / CSV, _rows(info, 1, horizon, _suffixed(metrics, suffix)))
        # Saved after its rows, so a resumed run never lacks the ground-truth rows.
        io.save_checkpoint(out_dir / GT, (g_es, g_exact), {"scenario": scenario})
        log(
            f"  {scenario}: ground truth (N={s['ground_truth_particles']}) "
            f"noise floor {metrics['ground_truth_noise_floor']:.3g}, error vs autodiff "
            f"{metrics['ground_truth_error_exact']:.3g} ({time.perf_counter() - t0:.1f} s)"
        )

    for trunc_len in sorted(s["trunc_lens"], reverse=True):
        if {f"{scenario}-n{n}-k{trunc_len}" for n in s["particle_counts"]} <= done:
            continue
        t0 = time.perf_counter()
        pairs = jax.block_until_ready(
            compiled.pairs(data, theta, jax.random.fold_in(pes_key, trunc_len), trunc_len)
        )
        pairs = jax.tree.map(np.asarray, pairs)
        rows, parts, unrolls = [], [], horizon // trunc_len
        for n in s["particle_counts"]:
            metrics = _particle_count_metrics(pairs, n, g_es, g_exact, s)
            info = _info(f"{scenario}-n{n}-k{trunc_len}", cfg, s["estimator"], trunc_len, s["sigma"], n)
            rows += _rows(info, unrolls, horizon, _suffixed(metrics, suffix))
            parts.append(f"N={n}: {metrics['normalized_variance']:.3g}")
        io.append_rows(out_dir / CSV, rows)
        log(
            f"  {scenario}: K={trunc_len} ({unrolls} unrolls) normalised variance "
            + ", ".join(parts)
            + f" ({time.perf_counter() - t0:.1f} s)"
        )

    meta["status"] = "complete"
    meta["wall_time_s"] += time.perf_counter() - start
    io.write_json(out_dir / META, meta)
    return out_dir


# ----------------------------------------------------------------------------- the step


def compute(ctx: steps.Context, plan: Plan) -> steps.StepOutput:
    """Every scenario (resumed where it stopped), then their rows in one table."""
    s = plan.settings
    compiled: dict[str, Compiled] = {}
    frames, walls = [], {}
    for i, sc in enumerate(plan.scenarios, 1):
        config.use_x64(sc.cfg)
        t0 = time.perf_counter()
        shape_key = json.dumps(
            {k: v for k, v in OmegaConf.to_container(sc.cfg.task, resolve=True).items() if k != "scenario"},
            sort_keys=True,
            default=str,
        ) + str(sc.cfg.x64)
        if shape_key not in compiled or not compiled[shape_key].shared:
            compiled[shape_key] = Compiled(sc.task, s)
        out = ctx.fig_dir / "steps" / "variance" / sc.name
        ctx.log(f"[variance {i}/{len(plan.scenarios)}] {ctx.fig.id} {sc.name} -> {out}")
        run_scenario(sc, s, compiled[shape_key], out, ctx.log)
        meta = io.read_json(out / META) or {}
        walls[sc.name] = meta.get("wall_time_s")
        ctx.log(
            f"[variance {i}/{len(plan.scenarios)}] {ctx.fig.id} {sc.name}: {meta.get('status')} "
            f"({time.perf_counter() - t0:.1f} s now, {meta.get('wall_time_s', 0):.1f} s total)"
        )
        frames.append(pd.read_csv(out / CSV))
    expected = []
    for sc in plan.scenarios:
        expected.append(f"{sc.name}-ground-truth")
        expected += [f"{sc.name}-n{n}-k{k}" for n in s["particle_counts"] for k in s["trunc_lens"]]
    rows = results.validate(pd.concat(frames, ignore_index=True), expected_runs=expected)
    return steps.StepOutput(rows, {}, {"scenario_wall_time_s": walls})


STEP = steps.register(
    steps.PostStep(
        name="variance",
        summary="the PES variance study at fixed theta",
        defaults={
            "scenarios": steps.REQUIRED,
            "sigma": steps.REQUIRED,
            "trunc_lens": steps.REQUIRED,
            "num_particles": steps.REQUIRED,
            "particle_counts": steps.REQUIRED,
            "num_repeats": steps.REQUIRED,
            "ground_truth_particles": steps.REQUIRED,
            "ground_truth_chunks": steps.REQUIRED,
            "batch_pairs": steps.REQUIRED,
            "estimator": "pes",
        },
        check=check,
        prepare=prepare,
        inputs=inputs,
        compute=compute,
        non_result=("batch_pairs",),
    )
)
