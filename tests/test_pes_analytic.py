"""PES-A: exact when a truncation is a whole episode, unbiased, and lower variance than PES."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pes import estimators, systems, tasks
from tests.helpers import dict_system, dict_theta
from tests.test_unbiasedness import LQ, THETA, Z, detectable_bias, episode_sums, exact_grad, z_scores


@pytest.mark.numerics
def test_full_truncations_give_the_exact_gradient():
    """K = T: the accumulator is zero at every truncation start, so the estimate is g_a, the
    gradient of the whole episode by backprop: exact, whatever the particles did."""
    system, theta = dict_system(horizon=5, dtype=jnp.float64), dict_theta(jnp.float64)
    est = estimators.make("pes_a", system, trunc_len=5, sigma=0.1, num_particles=4)
    state = est.init(jax.random.key(0), theta)
    key = jax.random.key(1)
    exact = jax.grad(lambda th: systems.full_objective(system, th, key, key))(theta)
    for i in range(2):
        grad, state, _ = est.estimate(jax.random.fold_in(key, i), theta, state)
        for g, e in zip(jax.tree.leaves(grad), jax.tree.leaves(exact)):
            np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-12)


@pytest.mark.numerics
def test_history_term_uses_the_accumulator_before_this_perturbation():
    """Second truncation of an episode, by hand: g_a + sum over pairs of
    (L+ - L- - 2 eps.g_a) xi_prev / (N sigma^2), with xi_prev the first truncation's eps."""
    task = tasks.make("linear_quadratic", dim=2, horizon=4)
    system, theta, sigma = task.system, jnp.array([0.2, -0.1]), 0.1
    est = estimators.make("pes_a", system, trunc_len=2, sigma=sigma, num_particles=2)
    key = jax.random.key(0)
    state = est.init(key, theta)
    _, state, _ = est.estimate(jax.random.fold_in(key, 0), theta, state)
    xi_prev = np.asarray(state.accum[0])
    s_plus, s_minus, s_mean = state.inner[0, 0], state.inner[0, 1], state.mean_inner
    k1 = jax.random.fold_in(key, 1)
    grad, state, _ = est.estimate(k1, theta, state)
    noise_key, data_key = jax.random.split(k1)
    eps = np.asarray(jax.random.normal(jax.random.split(noise_key, 1)[0], (1, 2)))[0] * sigma

    def unroll_loss(th, s):
        return jnp.sum(systems.unroll(system, th, s, jnp.int32(2), data_key, 2)[2])

    g_a = np.asarray(jax.grad(unroll_loss)(theta, s_mean))
    diff = float(unroll_loss(theta + eps, s_plus) - unroll_loss(theta - eps, s_minus))
    expected = g_a + (diff - 2 * eps @ g_a) * xi_prev / (2 * sigma**2)
    np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(state.accum[0]), 0.0)  # the episode ended with this truncation


@pytest.mark.parametrize("horizon, trunc_len", [(8, 2), (10, 5)])
def test_pes_a_is_unbiased_and_beats_pes_variance(horizon, trunc_len):
    system = LQ.system._replace(horizon=horizon)
    n = horizon // trunc_len
    samples = {}
    for name, reps in (("pes_a", 5000), ("pes", 2000)):
        est = estimators.make(name, system, trunc_len=trunc_len, sigma=0.3, num_particles=4)
        samples[name] = episode_sums(est, THETA, n, 1, reps=reps)
    z, mean = z_scores(samples["pes_a"], exact_grad(system, THETA))
    assert np.all(np.abs(z) < Z), (z, mean)
    assert detectable_bias(samples["pes_a"], exact_grad(system, THETA)) <= 0.05
    ratio = samples["pes_a"].var(axis=0).sum() / samples["pes"].var(axis=0).sum()
    assert ratio < 0.5, ratio  # measured 0.40 (T=8, K=2) and 0.21 (T=10, K=5); no control variate: 0.61, 0.34


def test_pes_a_refuses_truncations_that_straddle_episodes():
    with pytest.raises(ValueError, match="trunc_len=3 is invalid with horizon=10"):
        estimators.make("pes_a", LQ.system, trunc_len=3, sigma=0.1, num_particles=4)
