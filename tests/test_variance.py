"""The variance protocol (pes.variance) against closed forms on linear losses.

For a loss linear in theta, antithetic ES over the whole sequence has relative variance
(P + 1) / (N / 2) exactly, and PES summed over U unrolls whose losses do not interact
through the state has relative variance sum_u (P u + 1) ||A_u||^2 / (N / 2 ||sum A_u||^2)
(derivation in pes/variance.py).  Checks are statistical, with tolerances of 4 standard
errors of the mean over the repeats, plus negative controls that a wrong formula fails.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from pes import variance
from pes.systems import UnrolledSystem

THETA = {"w": jnp.full((3, 4), 0.5), "b": jnp.arange(5.0)}
_, UNRAVEL = ravel_pytree(THETA)
P = 17
SIGMA = 0.1  # any sigma: antithetic ES is exact for a linear loss
NUM_REPEATS = 2000
Z = 4.0  # tolerance in standard errors


def linear_system(step_grads):
    """Step t's loss is a_t . theta (a_t = row t of ``step_grads``, a (T, P) array)."""
    horizon = step_grads.shape[0]

    def init(key):
        del key
        return jnp.zeros((), jnp.int32)

    def step(theta, t, key):
        del key
        a = UNRAVEL(step_grads[t])
        loss = sum(jnp.sum(a[k] * theta[k]) for k in theta)
        return t + 1, loss

    return UnrolledSystem(init=init, step=step, horizon=horizon, unroll_loss="sum")


def exact_grad(step_grads):
    return UNRAVEL(jnp.sum(step_grads, axis=0))


@functools.partial(jax.jit, static_argnums=(2, 3))
def pes_errors(step_grads, key, trunc_len, num_particles):
    system = linear_system(step_grads)
    estimates = variance.repeat(
        lambda k: variance.full_sequence_pes(
            system, THETA, k, trunc_len=trunc_len, sigma=SIGMA, num_particles=num_particles
        ),
        key,
        NUM_REPEATS,
    )
    return estimates


def errors(estimates, step_grads):
    return variance.mean_and_stderr(variance.normalized_errors(estimates, exact_grad(step_grads)))


def test_antithetic_es_relative_variance_is_p_plus_1_over_half_n():
    step_grads = jax.random.normal(jax.random.PRNGKey(0), (4, P), jnp.float64)
    system = linear_system(step_grads)
    n = 6
    est = jax.jit(
        lambda k: variance.repeat(
            lambda kk: variance.full_sequence_es(system, THETA, kk, sigma=SIGMA, num_particles=n),
            k,
            NUM_REPEATS,
        )
    )(jax.random.PRNGKey(n))
    mean, se = errors(est, step_grads)
    assert variance.es_relative_variance(P, n) == (P + 1) / (n / 2)
    assert abs(mean - (P + 1) / (n / 2)) < Z * se, (n, mean, se)
    # The reference-free sample variance estimates the same quantity (same tolerance: its
    # spread over repeats is that of the per-repeat errors).
    sample = variance.normalized_sample_variance(est, exact_grad(step_grads))
    assert abs(sample - (P + 1) / (n / 2)) < Z * se, (sample, se)
    # Negative control: counting N as pairs (a factor 2) is rejected.
    assert abs(mean - (P + 1) / n) > Z * se


def _unroll_grads(step_grads, trunc_len):
    t = step_grads.shape[0]
    return np.asarray(step_grads).reshape(t // trunc_len, trunc_len, -1).sum(axis=1)


def test_pes_variance_grows_linearly_with_unrolls_for_independent_unrolls():
    # Orthogonal step gradients: the unrolls' gradients are uncorrelated (the random text).
    step_grads = jnp.eye(8, P)
    n = 4
    measured, predicted = [], []
    for trunc_len in (8, 2, 1):  # 1, 4, 8 unrolls
        est = pes_errors(step_grads, jax.random.PRNGKey(trunc_len), trunc_len, n)
        mean, se = errors(est, step_grads)
        closed = variance.pes_linear_relative_variance(_unroll_grads(step_grads, trunc_len), n)
        assert abs(mean - closed) < Z * se, (trunc_len, mean, closed, se)
        measured.append(mean)
        predicted.append(closed)
    unrolls = np.array([1, 4, 8])
    # The closed form is exactly linear in U: (P (U + 1) / 2 + 1) / (N / 2).
    np.testing.assert_allclose(predicted, (P * (unrolls + 1) / 2 + 1) / (n / 2), rtol=1e-12)
    # Measured: slope near 1 on log-log between 4 and 8 unrolls (the closed form's is 0.83;
    # the band is about 3 standard errors wide each side).
    slope = np.log(measured[2] / measured[1]) / np.log(2.0)
    assert 0.5 < slope < 1.2, slope
    assert measured[-1] > 3.0 * measured[0]
    # At one unroll PES is antithetic ES.
    assert predicted[0] == pytest.approx(variance.es_relative_variance(P, n))


def test_pes_variance_falls_for_identical_unrolls():
    # Every step has the same gradient (the repeated sequence): variance falls towards P / N.
    step_grads = jnp.tile(jax.random.normal(jax.random.PRNGKey(3), (1, P), jnp.float64), (8, 1))
    n = 4
    values = []
    for trunc_len in (8, 1):
        est = pes_errors(step_grads, jax.random.PRNGKey(10 + trunc_len), trunc_len, n)
        mean, se = errors(est, step_grads)
        closed = variance.pes_linear_relative_variance(_unroll_grads(step_grads, trunc_len), n)
        assert abs(mean - closed) < Z * se, (trunc_len, mean, closed, se)
        values.append((mean, se))
    (one, se1), (eight, se8) = values
    assert eight < one - Z * np.hypot(se1, se8)
    assert variance.pes_linear_relative_variance(_unroll_grads(step_grads, 1), n) == pytest.approx(
        (P * 9 / 2 + 1) / (n / 2 * 8), rel=1e-12
    )


def test_pair_estimates_give_every_particle_count():
    step_grads = jnp.eye(8, P)
    system = linear_system(step_grads)
    pairs = jax.jit(
        lambda k: variance.pair_estimates(
            system, THETA, k, trunc_len=2, sigma=SIGMA, num_pairs=3 * NUM_REPEATS, batch_size=1000
        )
    )(jax.random.PRNGKey(7))
    closed_form = variance.pes_linear_relative_variance(_unroll_grads(step_grads, 2), 2)
    for n in (2, 6):
        groups = variance.group_means(pairs, n)
        assert jax.tree.leaves(groups)[0].shape[0] == 3 * NUM_REPEATS // (n // 2)
        mean, se = errors(groups, step_grads)
        expected = closed_form * 2 / n  # 1/N scaling at fixed K
        assert abs(mean - expected) < Z * se, (n, mean, expected, se)
    # Group means are plain means of consecutive pairs.
    first = jax.tree.map(lambda x: np.asarray(x[:3]).mean(axis=0), pairs)
    jax.tree.map(
        np.testing.assert_allclose, jax.tree.map(lambda x: x[0], variance.group_means(pairs, 6)), first
    )
    with pytest.raises(ValueError, match="num_particles=3 is invalid"):
        variance.group_means(pairs, 3)


def test_ground_truth_noise_floor_matches_closed_form():
    step_grads = jax.random.normal(jax.random.PRNGKey(4), (4, P), jnp.float64)
    system = linear_system(step_grads)
    g = exact_grad(step_grads)
    n_gt = 40

    @jax.jit
    def many(key):
        return jax.vmap(
            lambda k: variance.ground_truth(system, THETA, k, sigma=SIGMA, num_particles=n_gt, num_chunks=5)
        )(jax.random.split(key, 400))

    means, chunks = many(jax.random.PRNGKey(5))
    expected = variance.es_relative_variance(P, n_gt)
    err_mean, err_se = variance.mean_and_stderr(variance.normalized_errors(means, g))
    assert abs(err_mean - expected) < Z * err_se
    floors = [variance.noise_floor(jax.tree.map(lambda x, r=r: x[r], chunks))[1] for r in range(400)]
    floor_mean, floor_se = variance.mean_and_stderr(np.array(floors) / variance.squared_norm(g))
    assert abs(floor_mean - expected) < Z * floor_se
    # The paper's metric against a noisy reference at one unroll.
    assert variance.against_noisy_reference(1.5, 0.3) == pytest.approx(1.8 / 1.3)


def test_bad_arguments():
    system = linear_system(jnp.eye(8, P))
    with pytest.raises(ValueError, match="trunc_len=3 is invalid for horizon T=8; allowed: a divisor of T"):
        variance.full_sequence_pes(
            system, THETA, jax.random.PRNGKey(0), trunc_len=3, sigma=0.1, num_particles=2
        )
    with pytest.raises(ValueError, match="num_particles=30 is invalid with num_chunks=4"):
        variance.ground_truth(system, THETA, jax.random.PRNGKey(0), sigma=0.1, num_particles=30, num_chunks=4)
    with pytest.raises(ValueError, match="num_repeats=0 is invalid"):
        variance.repeat(lambda k: k, jax.random.PRNGKey(0), 0)
    with pytest.raises(ValueError, match="finite horizon"):
        variance.full_sequence_pes(
            system._replace(horizon=None),
            THETA,
            jax.random.PRNGKey(0),
            trunc_len=1,
            sigma=0.1,
            num_particles=2,
        )


@pytest.mark.numerics
def test_pes_a_has_zero_variance_when_unrolls_do_not_interact():
    """PES-A (E9) on a linear loss whose unrolls do not interact through the state: the
    analytic term is the unroll's exact gradient and the control variate cancels the
    history term exactly, so every estimate is the exact gradient.  Plain PES on the same
    system has the closed-form variance above (negative control)."""
    step_grads = jax.random.normal(jax.random.PRNGKey(5), (8, P), jnp.float64)
    system = linear_system(step_grads)
    exact = exact_grad(step_grads)
    for trunc_len in (1, 2, 8):
        pairs = jax.jit(
            lambda k, tl=trunc_len: variance.pair_estimates(
                system, THETA, k, trunc_len=tl, sigma=SIGMA, num_pairs=6, estimator="pes_a"
            )
        )(jax.random.PRNGKey(trunc_len))
        for est in (pairs, variance.group_means(pairs, 6)):
            np.testing.assert_allclose(variance.normalized_errors(est, exact), 0.0, atol=1e-20)
    plain = variance.pair_estimates(
        system, THETA, jax.random.PRNGKey(1), trunc_len=1, sigma=SIGMA, num_pairs=6
    )
    assert variance.normalized_errors(plain, exact).mean() > 1.0
    with pytest.raises(ValueError, match="estimator='es' is invalid; allowed: pes, pes_a"):
        variance.full_sequence_pes(
            system, THETA, jax.random.PRNGKey(0), trunc_len=1, sigma=SIGMA, num_particles=2, estimator="es"
        )
