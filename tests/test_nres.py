"""Noise-reuse ES: a hand loop of the definition, unbiasedness with exact gradients, options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pes import estimators, systems, tasks
from pes.estimators._common import sample_noise, split_key
from tests.test_unbiasedness import LQ, THETA, Z, detectable_bias, episode_sums, ib_exact, z_scores


@pytest.mark.numerics
def test_nres_matches_a_hand_loop_across_mid_truncation_resets():
    """T=5, K=3: truncations cover t = (0,1,2) (3,4|0) (1,2,3) (4|0,1) (2,3,4|); episode 2
    starts inside truncation 2 and must use that truncation's fresh draw from then on."""
    task = tasks.make("linear_quadratic", dim=2, horizon=5)
    system, theta, sigma, k = task.system, jnp.array([0.2, -0.1]), 0.1, 3
    est = estimators.make("nres", system, trunc_len=k, sigma=sigma, num_particles=2)
    k0 = jax.random.key(0)
    state = est.init(k0, theta)
    eps = np.asarray(state.eps[0])
    s_plus, s_minus = np.asarray(state.inner[0, 0]), np.asarray(state.inner[0, 1])
    t = 0
    for i in range(5):
        key = jax.random.fold_in(k0, i)
        noise_key, data_key = split_key(key)
        fresh = np.asarray(sample_noise(noise_key, theta, 1, sigma))[0]
        grad, state, _ = est.estimate(key, theta, state)
        expected = np.zeros(2)
        cur = eps
        for kp in systems.step_keys(data_key, k):
            s_plus, l_plus = system.step(theta + cur, s_plus, kp[0])
            s_minus, l_minus = system.step(theta - cur, s_minus, kp[0])
            expected += (float(l_plus) - float(l_minus)) * cur / (2 * sigma**2)
            t += 1
            if t == system.horizon:  # new episode, new perturbation
                t = 0
                s_plus = s_minus = system.init(kp[1])
                cur = fresh
        eps = cur
        np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(np.asarray(state.eps[0]), eps, rtol=0, atol=0)
        np.testing.assert_allclose(np.asarray(state.inner[0, 0]), np.asarray(s_plus), rtol=1e-12)
        assert int(state.t[0]) == t
    # Negative control: the perturbation really changed at the two episode ends.
    assert not np.allclose(eps, np.asarray(est.init(k0, theta).eps[0]))


# Unbiasedness (and the exact variance) of NRES on a key-dependent system with resets inside
# truncations and staggered pairs: tests/test_unbiasedness.py (KEYED).


def test_nres_is_unbiased_on_influence_balancing():
    """Where truncated ES and TBPTT are >90 % biased (tests/test_unbiasedness.py)."""
    ib = tasks.make("influence_balancing", horizon=40)
    est = estimators.make("nres", ib.system, trunc_len=1, sigma=0.1, num_particles=10)
    samples = episode_sums(est, jnp.float64(0.5), 40, 1, reps=10000)
    z, mean = z_scores(samples, ib_exact())
    assert abs(z) < Z, (z, mean, ib_exact())
    assert detectable_bias(samples, ib_exact()) <= 0.05


@pytest.mark.numerics
def test_nres_options_and_errors():
    system = LQ.system
    with pytest.raises(ValueError, match="sigma"):
        estimators.make("nres", system, trunc_len=2, sigma=0.0, num_particles=4)
    with pytest.raises(ValueError, match="num_particles"):
        estimators.make("nres", system, trunc_len=2, sigma=0.1, num_particles=3)
    with pytest.raises(ValueError, match="stagger"):
        estimators.make(
            "nres", system._replace(horizon=None), trunc_len=2, sigma=0.1, num_particles=4, stagger=True
        )
    # Chunked particles give the same estimate.
    a = estimators.make("nres", system, trunc_len=4, sigma=0.1, num_particles=8, stagger=True)
    b = estimators.make(
        "nres", system, trunc_len=4, sigma=0.1, num_particles=8, stagger=True, particle_chunk_size=4
    )
    key = jax.random.key(5)
    sa, sb = a.init(key, THETA), b.init(key, THETA)
    for i in range(3):
        ga, sa, _ = a.estimate(jax.random.fold_in(key, i), THETA, sa)
        gb, sb, _ = b.estimate(jax.random.fold_in(key, i), THETA, sb)
        np.testing.assert_array_equal(np.asarray(ga), np.asarray(gb))
