"""Measurements of the estimators compared in figure 10 (PES, NRES, GPES-K, truncated ES): the
computations behind its two post-steps (`experiments.steps.estimator_comparison`), independent
of the figure pipeline, so benchmarks and users call them directly.

* `measure_variance`: for one task at its initial theta, the variance of one truncation's
  gradient estimate for every (estimator, particle setting, truncation length W) of a
  sweep, plus a GPES-K sweep over the noise-block length at one W, all against a
  whole-episode full-ES reference (`pes.variance.truncation_estimates` /
  `truncation_statistics`; each configuration is one compiled call).
* `interleaved_timing`: seconds per outer iteration of several compiled training steps,
  measured round-robin in one process so that every estimator sees the same machine load.

Estimator labels: ``pes``, ``nres``, ``es`` (truncated ES) and ``gpes<ne>`` (GPES-K with
``noise_every = ne``).  Particle settings: ``lockstep``, ``step_unlocked`` and ``own_keys``
(step-unlocked pairs that do not share random keys with each other: independent one-pair
chains averaged; the NRES paper's workers), see docs/estimator-guide.md.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
import pandas as pd

from pes import results, variance

SETTINGS = ("lockstep", "step_unlocked", "own_keys")
STAT_KEYS = (
    "variance",
    "variance_se",
    "mse",
    "mse_se",
    "bias2",
    "bias2_se",
    "num_estimates",
    "wall_time_s",
    "variance_vs_pes",
    "variance_vs_pes_hi",
)
ESTIMATORS = ("pes", "nres", "gpes", "es")


class VarConfig(NamedTuple):
    """One variance measurement: estimator, particle setting, W and noise block length."""

    estimator: str  # pes | nres | gpes | es
    setting: str  # lockstep | step_unlocked | own_keys
    trunc_len: int
    noise_every: int  # steps per noise block (W for pes/es, T for nres)
    family: str  # w_sweep | noise_sweep

    @property
    def label(self) -> str:
        return f"gpes{self.noise_every}" if self.estimator == "gpes" else self.estimator


def variance_configs(spec: Mapping, horizon: int) -> list[VarConfig]:
    """The configurations of one task's variance sweep (duplicates removed, sweep order).

    ``spec`` keys: ``trunc_lens`` (W values, each dividing T), ``estimators`` (of
    `ESTIMATORS`), ``gpes_factor`` (GPES-K in the W sweep uses noise_every = factor * W,
    skipped where that reaches T), ``settings`` (of `SETTINGS`), ``noise_sweep`` (None or
    ``{trunc_len: W, noise_every: [...]}``: GPES-K at one W, values >= T meaning NRES).
    """
    out: list[VarConfig] = []
    seen = set()

    def add(cfg: VarConfig):
        key = cfg[:4]
        if key not in seen:
            seen.add(key)
            out.append(cfg)

    for w in spec["trunc_lens"]:
        for setting in spec["settings"]:
            for name in spec["estimators"]:
                if name == "gpes":
                    ne = spec["gpes_factor"] * w
                    if ne >= horizon:
                        continue
                    add(VarConfig("gpes", setting, w, ne, "w_sweep"))
                else:
                    add(VarConfig(name, setting, w, horizon if name == "nres" else w, "w_sweep"))
    sweep = spec.get("noise_sweep")
    if sweep:
        w = sweep["trunc_len"]
        for setting in spec["settings"]:
            for ne in sweep["noise_every"]:
                if ne >= horizon:
                    add(VarConfig("nres", setting, w, horizon, "noise_sweep"))
                elif ne == w:
                    add(VarConfig("pes", setting, w, w, "noise_sweep"))
                else:
                    add(VarConfig("gpes", setting, w, ne, "noise_sweep"))
    return out


def check_variance_spec(spec: Mapping, horizon: int, where: str) -> None:
    """One-line `ValueError`s for a task's sweep settings (before any compute)."""

    def bad(key, value, allowed):
        raise ValueError(f"{where}: {key}={value!r} is invalid; allowed: {allowed}")

    ws = spec.get("trunc_lens")
    if not isinstance(ws, (list, tuple)) or not ws or any(not _int(w, 1) or horizon % w for w in ws):
        bad("trunc_lens", ws, f"a non-empty list of divisors of the horizon T={horizon}")
    for key, allowed in (("estimators", ESTIMATORS), ("settings", SETTINGS)):
        vals = spec.get(key)
        if not isinstance(vals, (list, tuple)) or not vals or any(v not in allowed for v in vals):
            bad(key, vals, f"a non-empty list of {', '.join(allowed)}")
    if "gpes" in spec["estimators"] and not _int(spec.get("gpes_factor"), 2):
        bad("gpes_factor", spec.get("gpes_factor"), "an integer >= 2")
    sweep = spec.get("noise_sweep")
    if sweep is not None:
        w = sweep.get("trunc_len") if isinstance(sweep, Mapping) else None
        nes = sweep.get("noise_every") if isinstance(sweep, Mapping) else None
        if not _int(w, 1) or horizon % w:
            bad("noise_sweep.trunc_len", w, f"a divisor of the horizon T={horizon}")
        if not isinstance(nes, (list, tuple)) or any(not _int(n, 1) or (n < horizon and n % w) for n in nes):
            bad("noise_sweep.noise_every", nes, f"a list of multiples of {w}, or values >= T={horizon}")
    for key, low in (("chains", 2), ("episodes", 1), ("ground_truth_particles", 2), ("num_particles", 2)):
        if not _int(spec.get(key), low):
            bad(key, spec.get(key), f"an integer >= {low}")
    if spec["ground_truth_particles"] % 20:
        bad("ground_truth_particles", spec["ground_truth_particles"], "a multiple of 20 (10 chunks of pairs)")
    sigma = spec.get("sigma")
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
        bad("sigma", sigma, "a number > 0")


def _int(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _hparams(cfg: VarConfig, spec: Mapping, num_particles: int, stagger: bool) -> dict:
    hp = dict(trunc_len=cfg.trunc_len, sigma=spec["sigma"], num_particles=num_particles, stagger=stagger)
    if cfg.estimator == "gpes":
        hp["noise_every"] = cfg.noise_every
    return hp


def estimates(system, theta, key, cfg: VarConfig, spec: Mapping) -> Any:
    """Per-truncation estimates of one configuration: leading axes (chains, estimates).

    Each chain discards one episode of truncations (T / W) and keeps ``episodes`` episodes'
    worth.  ``own_keys`` runs chains * G independent one-pair chains and averages them in
    groups of G = num_particles / 2 (an N-particle estimate is the mean of its pairs').
    """
    horizon = system.horizon
    per_episode = horizon // cfg.trunc_len
    chains, n = spec["chains"], spec["num_particles"]
    kw = dict(
        warmup=per_episode, num_estimates=spec["episodes"] * per_episode, batch_size=spec.get("batch_size")
    )
    if cfg.setting == "own_keys":
        groups = n // 2
        hp = _hparams(cfg, spec, 2, True)
        pairs = variance.truncation_estimates(
            system, theta, key, estimator=cfg.estimator, num_chains=chains * groups, **kw, **hp
        )
        return jax.tree.map(lambda x: x.reshape((chains, groups) + x.shape[1:]).mean(axis=1), pairs)
    hp = _hparams(cfg, spec, n, cfg.setting == "step_unlocked")
    return variance.truncation_estimates(
        system, theta, key, estimator=cfg.estimator, num_chains=chains, **kw, **hp
    )


def reference(system, theta, key, spec: Mapping) -> tuple[Any, float]:
    """The whole-episode full-ES gradient (``ground_truth_particles``) and its relative noise floor."""
    ref, chunks = variance.ground_truth(
        system,
        theta,
        key,
        sigma=spec["sigma"],
        num_particles=spec["ground_truth_particles"],
        num_chunks=10,
        batch_size=1,
    )
    return ref, variance.noise_floor(chunks)[0]


def _reference_summary(system, theta, key, spec: Mapping, task_label: str, log) -> tuple[Any, float, float]:
    """`reference`, its squared norm (float64) and its noise floor, logged."""
    t0 = time.perf_counter()
    ref, floor = reference(system, theta, key, spec)
    norm_sq = float(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree.leaves(ref)))
    log(
        f"[variance] {task_label}: reference ({spec['ground_truth_particles']} particles) "
        f"floor {floor:.3g}, {time.perf_counter() - t0:.1f} s"
    )
    return ref, norm_sq, float(floor)


def _config_rows(
    cfg: VarConfig, st: Mapping, task, spec: Mapping, *, task_label: str, seed: int
) -> list[dict]:
    """One configuration's statistics as rows of the results schema (timing has its own column)."""
    info = {
        "run_id": f"var-{task_label}-{cfg.label}-{cfg.setting}-w{cfg.trunc_len}",
        "figure": "",
        "task": task.name,
        "estimator": cfg.estimator,
        "trunc_len": cfg.trunc_len,
        "sigma": float(spec["sigma"]),
        "num_particles": int(spec["num_particles"]),
        "seed": seed,
        "outer_step": cfg.noise_every,
        "inner_steps": task.system.horizon,
    }
    metrics = tuple(k for k in STAT_KEYS if k != "wall_time_s")
    return [dict(info, metric=m, value=float(st[m])) for m in metrics if m in st]


def _detail_row(cfg: VarConfig, st: Mapping, task, spec: Mapping, *, task_label: str) -> dict:
    """One configuration's row of the detail table."""
    return dict(
        task_label=task_label,
        task=task.name,
        estimator=cfg.estimator,
        label=cfg.label,
        setting=cfg.setting,
        trunc_len=cfg.trunc_len,
        noise_every=cfg.noise_every,
        family=cfg.family,
        horizon=task.system.horizon,
        sigma=float(spec["sigma"]),
        num_particles=int(spec["num_particles"]),
        **{k: float(v) for k, v in st.items() if k in STAT_KEYS},
    )


def measure_variance(
    task,
    spec: Mapping,
    key: jax.Array,
    *,
    task_label: str,
    seed: int,
    log: Callable[[str], None] = print,
    done: Mapping[tuple, dict] | None = None,
    on_result: Callable[[VarConfig, dict], None] | None = None,
    reference_done: Mapping[str, float] | None = None,
    on_reference: Callable[[dict], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every configuration of one task's sweep: (rows in the results schema, detail table).

    Rows: run_id ``var-<task_label>-<label>-<setting>-w<W>``, estimator, trunc_len W,
    sigma, num_particles, seed, outer_step = noise_every (steps per noise block), inner_steps
    = T; metrics ``variance``, ``variance_se``, ``mse``, ``mse_se``, ``bias2``,
    ``num_estimates`` and ``variance_vs_pes`` / ``variance_vs_pes_hi`` (the ratio to PES at
    the same W and setting, and the upper end of its 95 % interval, log-normal delta method
    over the independent chains).  Reference rows: run_id ``var-<task_label>-reference``,
    estimator es, trunc_len T, metrics ``reference_norm_sq`` and ``reference_floor`` (its
    relative noise).  ``done`` (config key -> stats) skips finished configurations and
    ``on_result`` is called after each one (resumable progress); likewise ``on_reference``
    receives the reference's ``{"norm_sq", "floor"}`` once computed, and ``reference_done``
    (those two numbers from an earlier call) skips the reference when every configuration is
    done (the merge after a figure's parts ran as jobs, or a resumed step).
    """
    system, theta = task.system, task.theta_init
    horizon = system.horizon
    ref_key, est_key = jax.random.split(key)
    stats: dict[tuple, dict] = dict(done or {})
    configs = variance_configs(spec, horizon)
    if reference_done is not None and all(cfg[:4] in stats for cfg in configs):
        ref, norm_sq, floor = None, float(reference_done["norm_sq"]), float(reference_done["floor"])
    else:
        ref, norm_sq, floor = _reference_summary(system, theta, ref_key, spec, task_label, log)
        if on_reference is not None:
            on_reference({"norm_sq": norm_sq, "floor": floor})
    for i, cfg in enumerate(configs, 1):
        if cfg[:4] in stats:
            continue
        t0 = time.perf_counter()
        ests = estimates(system, theta, jax.random.fold_in(est_key, i), cfg, spec)
        st = variance.truncation_statistics(ests, ref, cfg.trunc_len / horizon)
        st["wall_time_s"] = time.perf_counter() - t0
        stats[cfg[:4]] = st
        if on_result is not None:
            on_result(cfg, st)
        log(
            f"[variance] {task_label} {i}/{len(configs)} {cfg.label} {cfg.setting} W={cfg.trunc_len}: "
            f"variance {st['variance']:.4g} ± {st['variance_se']:.2g} ({st['wall_time_s']:.1f} s)"
        )
    rows, detail = [], []
    for cfg in configs:
        st = dict(stats[cfg[:4]])
        pes_key = ("pes", cfg.setting, cfg.trunc_len, cfg.trunc_len)
        if pes_key in stats:
            st.update(_ratio(st, stats[pes_key]))
        rows += _config_rows(cfg, st, task, spec, task_label=task_label, seed=seed)
        detail.append(_detail_row(cfg, st, task, spec, task_label=task_label))
    rows += _reference_rows(task, spec, task_label=task_label, seed=seed, norm_sq=norm_sq, floor=floor)
    return pd.DataFrame(rows, columns=list(results.COLUMNS)), pd.DataFrame(detail)


def _reference_rows(task, spec: Mapping, *, task_label: str, seed: int, norm_sq: float, floor: float) -> list:
    """The reference's two rows (``reference_norm_sq``, ``reference_floor``) in the results schema."""
    horizon = task.system.horizon
    ref_info = dict(
        run_id=f"var-{task_label}-reference",
        figure="",
        task=task.name,
        estimator="es",
        trunc_len=horizon,
        sigma=float(spec["sigma"]),
        num_particles=int(spec["ground_truth_particles"]),
        seed=seed,
        outer_step=horizon,
        inner_steps=horizon,
    )
    return [
        dict(ref_info, metric="reference_norm_sq", value=norm_sq),
        dict(ref_info, metric="reference_floor", value=float(floor)),
    ]


def _ratio(st: Mapping, pes: Mapping) -> dict:
    """variance / PES's variance and the upper end of its 95 % interval."""
    a, b = st["variance"], pes["variance"]
    if not (a > 0 and b > 0):
        return {}
    rel = math.hypot(st["variance_se"] / a, pes["variance_se"] / b)
    ratio = a / b
    return {"variance_vs_pes": ratio, "variance_vs_pes_hi": ratio * math.exp(1.96 * rel)}


# ----------------------------------------------------------------------------- timing


class Timed(NamedTuple):
    """Interleaved timing of one compiled training step."""

    s_per_step: float  # median over rounds of (seconds per call) / steps per call
    spread: float  # (max - min) / median over the rounds
    init_s: float  # seconds of the estimator's (compiled) init, burn-in included
    compile_s: float


def interleaved_timing(
    entries: Mapping[str, tuple[Callable[[], Any], Callable[[Any], Any]]],
    *,
    rounds: int,
    steps_per_call: int,
    log: Callable[[str], None] = print,
) -> dict[str, Timed]:
    """Seconds per outer step of several trainings, measured side by side.

    ``entries``: name -> (``init() -> state``, ``chunk(state) -> (state, metrics)`` running
    ``steps_per_call`` outer steps), both jitted.  Everything is compiled and run once
    first; then ``rounds`` rounds call every entry once, in a rotated order, so that each
    estimator sees the same load; the median per entry is kept.
    """
    names = list(entries)
    states, init_s, compile_s = {}, {}, {}
    for name in names:
        init, chunk = entries[name]
        t0 = time.perf_counter()
        state = jax.block_until_ready(init())
        state, _ = jax.block_until_ready(chunk(state))
        compile_s[name] = time.perf_counter() - t0
        t0 = time.perf_counter()
        jax.block_until_ready(init())
        init_s[name] = time.perf_counter() - t0
        states[name] = state
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            states[name], _ = jax.block_until_ready(entries[name][1](states[name]))
            samples[name].append((time.perf_counter() - t0) / steps_per_call)
    out = {}
    for name in names:
        med = statistics.median(samples[name])
        out[name] = Timed(med, (max(samples[name]) - min(samples[name])) / med, init_s[name], compile_s[name])
        log(
            f"[timing] {name}: {med * 1e3:.3f} ms/step (spread {out[name].spread:.0%}), "
            f"init {init_s[name]:.2f} s"
        )
    return out


def wall_clock_rows(
    run_rows: pd.DataFrame, timed: Mapping[str, Timed], key_of: Callable[[str], str]
) -> pd.DataFrame:
    """``wall_clock_s`` = init + outer_step * seconds per step at every logged step of every run.

    ``key_of(run_id)`` names the timed entry of a run (runs that differ only by seed share one).
    """
    steps = run_rows.drop_duplicates(["run_id", "seed", "outer_step"])
    out = []
    for _, row in steps.iterrows():
        t = timed[key_of(row["run_id"])]
        base = {c: row[c] for c in results.COLUMNS if c not in ("metric", "value")}
        out.append(dict(base, metric="wall_clock_s", value=t.init_s + row["outer_step"] * t.s_per_step))
        if row["outer_step"] == 0:
            out += [
                dict(base, metric="s_per_step", value=t.s_per_step),
                dict(base, metric="s_per_step_spread", value=t.spread),
                dict(base, metric="init_s", value=t.init_s),
            ]
    return pd.DataFrame(out, columns=list(results.COLUMNS))


def load_average() -> str:
    """``uptime``'s load averages (1, 5, 15 min), for the record of a timing."""
    try:
        import os

        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover - platforms without getloadavg
        return "unknown"


def distinct(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))
