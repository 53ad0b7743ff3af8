"""The empirical-variance protocol of the PES paper (E3): pure functions, no I/O.

With theta fixed, the PES estimate of the whole-sequence gradient is the **sum** of the
per-unroll PES estimates over the T/K unrolls of one episode (`full_sequence_pes`).  Its
quality is measured against a reference gradient g_ref as

    normalised variance = mean over repeats of ||g_PES - g_ref||^2 / ||g_ref||^2.

The paper's reference is full-sequence antithetic ES (K = T) with many particles
(`ground_truth`), which is itself noisy: its relative error ("noise floor") adds to the
measured value, so it is estimated too (`noise_floor`, from independent particle chunks)
and compared with the closed form `es_relative_variance`.

Closed forms used to check the routine (``unroll_grads`` A_u = gradient of unroll u's
loss, P parameters, G = N/2 antithetic pairs) for a loss that is **linear** in theta:

* antithetic ES over the whole sequence: relative variance (P + 1) / G;
* PES summed over U unrolls of a system whose unrolls do not interact through the state:
  sum_u (P u + 1) ||A_u||^2 / (G ||sum_u A_u||^2) (`pes_linear_relative_variance`), which
  grows linearly in U for orthogonal unroll gradients and falls towards P / (2G) for
  identical ones.

Estimates are batched in compiled code: `lax.scan` over unrolls, `vmap` over particles
(inside the estimator) and `lax.map` with ``batch_size`` over repeats.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pes import estimators, systems

PyTree = Any


def _check_horizon(system: systems.UnrolledSystem, trunc_len: int) -> int:
    horizon = system.horizon
    if horizon is None:
        raise ValueError("the variance protocol needs a finite horizon T; this system has horizon=None")
    if isinstance(trunc_len, bool) or not isinstance(trunc_len, int) or trunc_len < 1 or horizon % trunc_len:
        raise ValueError(
            f"trunc_len={trunc_len!r} is invalid for horizon T={horizon}; allowed: a divisor of T"
        )
    return horizon // trunc_len


def _tree_add(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(jnp.add, a, b)


def full_sequence_pes(
    system: systems.UnrolledSystem,
    theta: PyTree,
    key: jax.Array,
    *,
    trunc_len: int,
    sigma: float,
    num_particles: int,
    antithetic: bool = True,
    estimator: str = "pes",
) -> PyTree:
    """Sum of the PES estimates of the T/K unrolls of one episode, theta fixed.

    The particles start from ``system.init`` and are not staggered; the estimator's own
    accumulators carry the perturbations across unrolls.  ``trunc_len`` must divide T.
    ``estimator`` is ``pes`` or ``pes_a`` (PES with the analytic current-unroll gradient).
    """
    num_unrolls = _check_horizon(system, trunc_len)
    if estimator not in ("pes", "pes_a"):
        raise ValueError(f"estimator={estimator!r} is invalid; allowed: pes, pes_a")
    est = estimators.make(
        estimator,
        system,
        trunc_len=trunc_len,
        sigma=sigma,
        num_particles=num_particles,
        antithetic=antithetic,
    )
    init_key, scan_key = jax.random.split(key)
    state = est.init(init_key, theta)

    def body(carry, k):
        total, state = carry
        grad, state, _ = est.estimate(k, theta, state)
        return (_tree_add(total, grad), state), None

    zeros = jax.tree.map(jnp.zeros_like, theta)
    (total, _), _ = jax.lax.scan(body, (zeros, state), jax.random.split(scan_key, num_unrolls))
    return total


def full_sequence_es(
    system: systems.UnrolledSystem,
    theta: PyTree,
    key: jax.Array,
    *,
    sigma: float,
    num_particles: int,
    antithetic: bool = True,
) -> PyTree:
    """One full-sequence ES estimate (K = T): the paper's ground-truth estimator."""
    _check_horizon(system, system.horizon if system.horizon is not None else 0)
    est = estimators.make(
        "es",
        system,
        trunc_len=system.horizon,
        sigma=sigma,
        num_particles=num_particles,
        antithetic=antithetic,
    )
    init_key, est_key = jax.random.split(key)
    grad, _, _ = est.estimate(est_key, theta, est.init(init_key, theta))
    return grad


def repeat(
    fn: Callable[[jax.Array], PyTree], key: jax.Array, num_repeats: int, batch_size: int | None = None
) -> PyTree:
    """``fn(key_r)`` for ``num_repeats`` independent keys, stacked on a leading axis.

    Repeats run ``batch_size`` at a time under ``vmap`` (all at once if None), the
    batches sequentially under `lax.map`, which bounds memory.
    """
    if isinstance(num_repeats, bool) or not isinstance(num_repeats, int) or num_repeats < 1:
        raise ValueError(f"num_repeats={num_repeats!r} is invalid; allowed: an integer >= 1")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size={batch_size!r} is invalid; allowed: null or an integer >= 1")
    keys = jax.random.split(key, num_repeats)
    if batch_size is None or batch_size >= num_repeats:
        return jax.vmap(fn)(keys)
    return jax.lax.map(fn, keys, batch_size=batch_size)


def pair_estimates(
    system: systems.UnrolledSystem,
    theta: PyTree,
    key: jax.Array,
    *,
    trunc_len: int,
    sigma: float,
    num_pairs: int,
    batch_size: int | None = None,
    estimator: str = "pes",
) -> PyTree:
    """``num_pairs`` independent full-sequence PES estimates of one antithetic pair each.

    An N-particle antithetic PES estimate is the mean of its N/2 pairs' estimates.  When
    the system is deterministic (its step ignores the key, as the PTB LSTM's does) the
    pairs are i.i.d., so averaging disjoint groups of N/2 pair estimates (`group_means`)
    gives independent N-particle estimates for every N from one computation.  For a
    system whose steps use their keys, the pairs of one estimate share data keys (common
    random numbers) and this shortcut does not apply: use `full_sequence_pes`.  It also
    holds for ``estimator="pes_a"``: its analytic term comes from the unperturbed mean
    trajectory, identical in every pair of a deterministic system, and the rest is linear
    in the pairs.
    """

    def one(k):
        return full_sequence_pes(
            system, theta, k, trunc_len=trunc_len, sigma=sigma, num_particles=2, estimator=estimator
        )

    return repeat(one, key, num_pairs, batch_size)


def group_means(pairs: PyTree, num_particles: int) -> PyTree:
    """Disjoint N-particle estimates from stacked pair estimates: leading axis R_N.

    R_N = floor(num_pairs / (N / 2)); leftover pairs are dropped.
    """
    if (
        isinstance(num_particles, bool)
        or not isinstance(num_particles, int)
        or num_particles < 2
        or num_particles % 2
    ):
        raise ValueError(f"num_particles={num_particles!r} is invalid; allowed: a positive even integer")
    group = num_particles // 2
    num_pairs = jax.tree.leaves(pairs)[0].shape[0]
    count = num_pairs // group
    if count < 1:
        raise ValueError(
            f"num_particles={num_particles} needs at least {group} pair estimates; got {num_pairs}"
        )

    def leaf(x):
        x = np.asarray(x)[: count * group]
        return x.reshape((count, group) + x.shape[1:]).mean(axis=1)

    return jax.tree.map(leaf, pairs)


def ground_truth(
    system: systems.UnrolledSystem,
    theta: PyTree,
    key: jax.Array,
    *,
    sigma: float,
    num_particles: int,
    num_chunks: int = 10,
    batch_size: int | None = 1,
) -> tuple[PyTree, PyTree]:
    """Full-sequence antithetic ES with ``num_particles`` in ``num_chunks`` equal chunks.

    The mean of equal-size independent ES estimates is the ES estimate with all their
    particles, so the first output is exactly an N = ``num_particles`` ground truth; the
    chunk estimates (second output, leading axis ``num_chunks``) give its noise floor.
    """
    if isinstance(num_chunks, bool) or not isinstance(num_chunks, int) or num_chunks < 2:
        raise ValueError(f"num_chunks={num_chunks!r} is invalid; allowed: an integer >= 2")
    if num_particles % (2 * num_chunks):
        raise ValueError(
            f"ground-truth num_particles={num_particles} is invalid with num_chunks={num_chunks}; "
            f"allowed: a multiple of 2 * num_chunks = {2 * num_chunks}"
        )
    per_chunk = num_particles // num_chunks

    def one(k):
        return full_sequence_es(system, theta, k, sigma=sigma, num_particles=per_chunk)

    chunks = repeat(one, key, num_chunks, batch_size)
    return jax.tree.map(lambda x: jnp.mean(x, axis=0), chunks), chunks


# ----------------------------------------------------------------------------- per truncation
# The successor papers (NRES, Li et al. 2023) compare online estimators by the variance of
# one truncation's estimate -- the gradient an outer step actually uses -- with theta fixed
# and the particles' states, counters and noise histories in their long-run (stationary)
# regime.  `truncation_estimates` runs an estimator that long and keeps every estimate.


def truncation_estimates(
    system: systems.UnrolledSystem,
    theta: PyTree,
    key: jax.Array,
    *,
    estimator: str,
    num_chains: int,
    warmup: int,
    num_estimates: int,
    batch_size: int | None = None,
    **hparams: Any,
) -> PyTree:
    """Consecutive per-truncation estimates of ``estimator`` at a fixed theta.

    Each of ``num_chains`` independent chains builds the estimator's state with its own key,
    discards ``warmup`` estimates (for example one episode's worth, T / K, so that every
    pair has passed an episode end and carries its estimator's own noise history) and
    keeps the next ``num_estimates``.  ``hparams`` go to `pes.estimators.make` (including
    ``stagger`` for step-unlocked pairs).  Returns theta's tree with leading axes
    (num_chains, num_estimates): a ``lax.scan`` over truncations inside each chain, chains
    batched by `repeat`.
    """
    for name, value, low in (
        ("num_chains", num_chains, 1),
        ("warmup", warmup, 0),
        ("num_estimates", num_estimates, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}={value!r} is invalid; allowed: an integer >= {low}")
    est = estimators.make(estimator, system, **hparams)

    def chain(k):
        init_key, run_key = jax.random.split(k)
        keys = jax.random.split(run_key, warmup + num_estimates)
        state = est.init(init_key, theta)

        def skip(state, kk):
            return est.estimate(kk, theta, state)[1], None

        def keep(state, kk):
            grad, state, _ = est.estimate(kk, theta, state)
            return state, grad

        state, _ = jax.lax.scan(skip, state, keys[:warmup])
        _, grads = jax.lax.scan(keep, state, keys[warmup:])
        return grads

    return repeat(chain, key, num_chains, batch_size)


def truncation_statistics(estimates: PyTree, reference: PyTree, scale: float) -> dict[str, float]:
    """Relative variance, bias and error of per-truncation estimates (leading axes (C, L)).

    ``reference`` is a whole-episode gradient and ``scale`` the share of an episode one
    truncation covers (K / T): an unbiased per-truncation estimate averages ``scale *
    reference`` over the episode's phases.  With r = scale * reference:

    * ``variance``: mean over all estimates of ||g - g_bar||^2 / ||r||^2, g_bar the pooled
      long-run mean of these estimates (the estimator's own target; estimators whose noise
      blocks differ smooth a nonlinear loss differently, so their targets differ by
      O(sigma^2)); ``variance_se`` its standard error from the chains (independent);
    * ``mse``: mean ||g - r||^2 / ||r||^2 (includes bias and the reference's own error),
      with ``mse_se``;
    * ``bias2``: ||g_bar - r||^2 / ||r||^2 minus its part due to g_bar's own noise (the
      spread of the chain means / C), i.e. an estimate of the squared relative bias that
      is unbiased when the chains are independent (it can come out slightly negative);
      ``bias2_se`` the standard error of that noise part.
    """
    flat = _flat(jax.tree.map(lambda x: np.reshape(np.asarray(x), (-1,) + np.shape(x)[2:]), estimates), 1)
    chains, length = np.shape(jax.tree.leaves(estimates)[0])[:2]
    ref = scale * _flat(reference, 0)
    norm = float(np.sum(ref**2))
    if not norm > 0:
        raise ValueError("the reference gradient is zero; relative statistics are undefined")
    mean = flat.mean(axis=0)
    var = (np.sum((flat - mean) ** 2, axis=1) / norm).reshape(chains, length).mean(axis=1)
    mse = (np.sum((flat - ref) ** 2, axis=1) / norm).reshape(chains, length).mean(axis=1)
    out = {}
    for name, values in (("variance", var), ("mse", mse)):
        out[name], out[f"{name}_se"] = mean_and_stderr(values)
    chain_means = flat.reshape(chains, length, -1).mean(axis=1)
    noise = float(np.sum(np.var(chain_means, axis=0, ddof=1)) / chains / norm) if chains > 1 else 0.0
    out["bias2"] = float(np.sum((mean - ref) ** 2) / norm) - noise
    out["bias2_se"] = noise
    out["num_estimates"] = float(chains * length)
    return out


# ----------------------------------------------------------------------------- statistics
# These take stacked estimates (leading repeat axis) as NumPy or JAX arrays and return
# NumPy floats; flattening here is only for norms, theta itself stays a pytree.


def _flat(tree: PyTree, leading: int) -> np.ndarray:
    leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]
    if leading:
        return np.concatenate([x.reshape(x.shape[0], -1) for x in leaves], axis=1)
    return np.concatenate([x.reshape(-1) for x in leaves])


def num_params(theta: PyTree) -> int:
    """The number of scalars in θ."""
    return int(sum(np.size(x) for x in jax.tree.leaves(theta)))


def squared_norm(grad: PyTree) -> float:
    """‖grad‖² over all leaves, in float64."""
    return float(np.sum(_flat(grad, 0) ** 2))


def normalized_errors(estimates: PyTree, reference: PyTree) -> np.ndarray:
    """Per repeat ||g_r - g_ref||^2 / ||g_ref||^2, shape (R,)."""
    est = _flat(estimates, 1)
    ref = _flat(reference, 0)
    return np.sum((est - ref[None]) ** 2, axis=1) / np.sum(ref**2)


def mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
    """Sample mean and its standard error (sample std / sqrt(R))."""
    values = np.asarray(values, np.float64)
    if values.size < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(values.size))


def normalized_sample_variance(estimates: PyTree, reference: PyTree) -> float:
    """Trace of the repeats' sample covariance / ||g_ref||^2 (reference-free numerator).

    For an unbiased estimator this has the same expectation as the variance around the
    true gradient, without the reference's own error in the numerator.
    """
    est = _flat(estimates, 1)
    if est.shape[0] < 2:
        return float("nan")
    return float(np.sum(np.var(est, axis=0, ddof=1)) / squared_norm(reference))


def noise_floor(chunks: PyTree) -> tuple[float, float]:
    """The relative error of the mean of C chunk estimates (the ground truth's floor).

    Returns (relative floor, absolute floor).  The absolute floor
    f = sum_c ||g_c - mean||^2 / (C (C - 1)) is an unbiased estimate of E||mean - g||^2;
    the relative floor divides it by ||mean||^2 - f, an unbiased estimate of ||g||^2
    (||mean||^2 alone is inflated by the noise).
    """
    flat = _flat(chunks, 1)
    count = flat.shape[0]
    if count < 2:
        raise ValueError(f"noise_floor needs at least 2 chunks; got {count}")
    mean = flat.mean(axis=0)
    floor = float(np.sum((flat - mean[None]) ** 2) / (count * (count - 1)))
    signal = float(np.sum(mean**2)) - floor
    return (floor / signal if signal > 0 else float("inf")), floor


def es_relative_variance(num_params: int, num_particles: int) -> float:
    """(P + 1) / (N / 2): antithetic ES's relative variance for a locally linear loss."""
    return (num_params + 1) / (num_particles / 2)


def against_noisy_reference(relative_variance: float, floor: float) -> float:
    """E||g_hat - g_ref||^2 / ||g_ref||^2 for an unbiased g_hat and an independent g_ref.

    With relative variances v (estimate) and f (reference) the numerator is
    (v + f) ||g||^2 and the denominator about (1 + f) ||g||^2: the value the paper's
    normalised variance takes when the estimator's true relative variance is v.
    """
    return (relative_variance + floor) / (1.0 + floor)


def pes_linear_relative_variance(unroll_grads: np.ndarray, num_particles: int) -> float:
    """Exact relative variance of summed antithetic PES for a linear, state-free loss.

    Args:
      unroll_grads: (U, P) gradients A_u of the U unroll losses (loss_u = A_u . theta).
      num_particles: N (both signs counted).
    """
    grads = np.asarray(unroll_grads, np.float64)
    num_unrolls, p = grads.shape
    u = np.arange(1, num_unrolls + 1)
    total = grads.sum(axis=0)
    return float(np.sum((p * u + 1) * np.sum(grads**2, axis=1)) / ((num_particles / 2) * np.sum(total**2)))


__all__ = [
    "full_sequence_pes",
    "full_sequence_es",
    "repeat",
    "pair_estimates",
    "group_means",
    "ground_truth",
    "truncation_estimates",
    "truncation_statistics",
    "num_params",
    "squared_norm",
    "normalized_errors",
    "mean_and_stderr",
    "normalized_sample_variance",
    "noise_floor",
    "es_relative_variance",
    "against_noisy_reference",
    "pes_linear_relative_variance",
]
