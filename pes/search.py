"""Random search over hyperparameters: sampling, vectorised scoring, best-so-far curves.

A configuration is a theta in the task's unconstrained space (any pytree).  Random search
samples configurations uniformly in a box ``[low, high]`` given per leaf (scalars or
arrays broadcastable to the leaf), scores each by the mean of ``num_runs`` full-horizon
meta-objectives from fresh inner initialisations, and reports the best score found so far.

Scoring is batched: `score_configs` runs ``vmap`` over a chunk of configurations (each
chunk one compiled call of ``chunk_size`` configurations x ``num_runs`` trainings) and
``lax.map`` over chunks, so nothing loops in Python per configuration; the experiment layer
calls it chunk by chunk for progress and resumption.  Every configuration is scored on the
same inner runs (common random numbers: the keys come from ``key`` only), so differences
between configurations are not run-to-run noise.  A configuration whose training diverges
(non-finite mean) scores ``+inf``: it can never be the best.

Compute is counted in inner steps: one score costs ``num_runs * T`` (`score_cost`).  Pure
JAX/NumPy: no files, no printing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pes import systems

PyTree = Any


def _check_count(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"random search: {name}={value!r} is invalid; allowed: an integer >= {minimum}")


def check_box(low: PyTree, high: PyTree) -> None:
    """``low`` and ``high`` have one structure and finite low < high everywhere."""
    if jax.tree.structure(low) != jax.tree.structure(high):
        raise ValueError("random search: low and high have different tree structures")
    for lo, hi in zip(jax.tree.leaves(low), jax.tree.leaves(high)):
        lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo < hi)):
            raise ValueError(f"random search: range [{lo}, {hi}] is invalid; allowed: finite low < high")


def uniform_configs(
    key: jax.Array, low: PyTree, high: PyTree, num: int, like: PyTree | None = None
) -> PyTree:
    """``num`` configurations uniform in the box (a tree whose leaves gain a leading ``num`` axis).

    ``like`` (optional) gives each leaf's shape and dtype when ``low``/``high`` are scalars.
    """
    _check_count("num_configs", num)
    check_box(low, high)
    ref = low if like is None else like
    leaves, treedef = jax.tree.flatten(ref)
    keys = jax.random.split(key, len(leaves))
    lows, highs = jax.tree.leaves(low), jax.tree.leaves(high)
    out = []
    for k, leaf, lo, hi in zip(keys, leaves, lows, highs):
        shape = jnp.shape(leaf)
        dtype = jnp.result_type(leaf) if like is not None else jnp.result_type(float)
        u = jax.random.uniform(k, (num, *shape), dtype)
        lo = jnp.broadcast_to(jnp.asarray(lo, dtype), shape)[None]
        hi = jnp.broadcast_to(jnp.asarray(hi, dtype), shape)[None]
        out.append(lo + u * (hi - lo))
    return jax.tree.unflatten(treedef, out)


def run_keys(key: jax.Array, num_runs: int) -> jax.Array:
    """The keys of the ``num_runs`` scoring runs, shape (num_runs,) (one key per run)."""
    _check_count("num_runs", num_runs)
    return jax.random.split(key, num_runs)


def full_run_objective(system: systems.UnrolledSystem, theta: PyTree, key: jax.Array) -> jax.Array:
    """One fresh full-horizon run's meta-objective: (init key, data key) = split(key)."""
    init_key, data_key = jax.random.split(key)
    return systems.full_objective(system, theta, init_key, data_key)


def mean_objective(system: systems.UnrolledSystem, keys: jax.Array) -> Callable[[PyTree], jax.Array]:
    """theta -> mean over the runs ``keys`` (from `run_keys`) of the full-horizon meta-objective.

    Run ``k`` is `full_run_objective` with key ``k``: it starts from ``system.init`` of the
    first half of ``split(k)`` and is driven by the second half exactly as
    `pes.systems.full_objective`; a non-finite mean becomes ``+inf``.
    """
    if system.horizon is None:
        raise ValueError("random search needs a finite horizon; this system has horizon=None")

    def score(theta):
        values = jax.vmap(lambda k: full_run_objective(system, theta, k))(keys)
        mean = jnp.mean(values)
        return jnp.where(jnp.isfinite(mean), mean, jnp.inf)

    return score


def score_configs(score: Callable[[PyTree], jax.Array], configs: PyTree, chunk_size: int) -> jax.Array:
    """``score`` of every configuration (leading axis of ``configs``), shape (num,).

    ``vmap`` within chunks of ``chunk_size``, ``lax.map`` over the chunks (the last one padded
    with copies of the first configuration, dropped from the result).  Jittable with
    ``score`` and ``chunk_size`` static.
    """
    _check_count("chunk_size", chunk_size)
    leaves, treedef = jax.tree.flatten(configs)
    num = leaves[0].shape[0]
    if num == 0:
        raise ValueError("random search: no configurations to score; allowed: at least one")
    chunk = min(chunk_size, num)
    num_chunks = -(-num // chunk)
    pad = num_chunks * chunk - num

    def prep(x):
        if pad:
            x = jnp.concatenate([x, jnp.broadcast_to(x[:1], (pad, *x.shape[1:]))])
        return x.reshape(num_chunks, chunk, *x.shape[1:])

    chunks = jax.tree.unflatten(treedef, [prep(x) for x in leaves])
    values = jax.lax.map(jax.vmap(score), chunks)
    return values.reshape(-1)[:num]


def best_so_far(scores: np.ndarray) -> np.ndarray:
    """Running minimum of the scores (NaN counts as +inf)."""
    scores = np.asarray(scores, np.float64)
    return np.minimum.accumulate(np.where(np.isnan(scores), np.inf, scores))


def score_cost(horizon: int, num_runs: int) -> int:
    """Inner steps spent on one configuration's score: ``num_runs * horizon``."""
    return int(num_runs) * int(horizon)


class RandomSearchResult(NamedTuple):
    """Random search: the configurations, their scores, the best score so far and the compute spent."""

    configs: PyTree  # leading axis num_configs
    scores: np.ndarray  # (num_configs,)
    best: np.ndarray  # best_so_far(scores)
    total_compute: np.ndarray  # inner steps after each configuration: (i + 1) * num_runs * T


def random_search(
    system: systems.UnrolledSystem,
    key: jax.Array,
    low: PyTree,
    high: PyTree,
    *,
    num_configs: int,
    num_runs: int,
    chunk_size: int = 8,
    like: PyTree | None = None,
) -> RandomSearchResult:
    """Sample ``num_configs`` configurations in [low, high] and score them (one compiled call).

    ``key`` is split into a sampling key and the scoring runs' key.  For progress reporting
    and resumption call `uniform_configs` / `score_configs` chunk by chunk instead (same
    numbers: the configurations and run keys depend only on ``key``).
    """
    _check_count("num_configs", num_configs)
    _check_count("num_runs", num_runs)
    sample_key, run_key = jax.random.split(key)
    configs = uniform_configs(sample_key, low, high, num_configs, like)
    score = mean_objective(system, run_keys(run_key, num_runs))
    scores = np.asarray(jax.jit(score_configs, static_argnums=(0, 2))(score, configs, chunk_size))
    compute = np.arange(1, num_configs + 1, dtype=np.float64) * score_cost(system.horizon, num_runs)
    return RandomSearchResult(configs, scores, best_so_far(scores), compute)
