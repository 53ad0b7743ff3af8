"""Deterministic identities between estimators, checked exactly in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pes import estimators, systems, tasks
from pes.estimators._common import sample_noise
from tests import reference
from tests.helpers import assert_trees_close, dict_system, dict_theta, jitted, random_init_linear

pytestmark = pytest.mark.numerics  # exact equivalences: rerun by `make test-portable`


def make(name, system, **hp):
    """A jitted estimator (one compilation instead of op-by-op dispatch)."""
    return jitted(estimators.make(name, system, **hp))


def _exact_grad(system, theta, init_key, key):
    """jax.grad of the whole-episode objective with the estimators' key discipline."""
    _, data_key = jax.random.split(key)
    return jax.jit(jax.grad(lambda th: systems.full_objective(system, th, init_key, data_key)))(theta)


@pytest.mark.parametrize("system_fn", [dict_system, random_init_linear])
def test_tbptt_full_horizon_equals_backprop(system_fn):
    system = (
        system_fn(horizon=7) if system_fn is random_init_linear else system_fn(horizon=7, dtype=jnp.float64)
    )
    theta = dict_theta(jnp.float64) if system_fn is dict_system else jnp.array([0.1, -0.3, 0.2])
    k0, k1 = jax.random.key(0), jax.random.key(1)
    est = make("tbptt", system, trunc_len=7)
    grad, state, _ = est.estimate(k1, theta, est.init(k0, theta))
    assert_trees_close(grad, _exact_grad(system, theta, k0, k1))
    assert int(state.t) == 0  # the episode ended and was reset


@pytest.mark.parametrize("trunc_len", [1, 3, 7])
def test_rtrl_summed_over_the_horizon_equals_backprop(trunc_len):
    """Also with T=7 not a multiple of K=3: the reset falls inside a truncation."""
    system = dict_system(horizon=7, dtype=jnp.float64)
    theta = dict_theta(jnp.float64)
    k0, k1 = jax.random.key(0), jax.random.key(1)
    est = make("rtrl", system, trunc_len=7)
    exact, _, _ = est.estimate(k1, theta, est.init(k0, theta))
    est = make("rtrl", system, trunc_len=trunc_len)
    state = est.init(k0, theta)
    # Drive the per-truncation keys so that the concatenated steps see the same step keys
    # as one 7-step unroll would: compare instead with backprop through the same steps.
    total = jax.tree.map(jnp.zeros_like, theta)
    steps_done, i = 0, 0
    keys = []
    while steps_done < 7:
        key = jax.random.fold_in(k1, i)
        keys.append(key)
        grad, state, _ = est.estimate(key, theta, state)
        total = jax.tree.map(jnp.add, total, grad)
        steps_done += trunc_len
        i += 1

    def objective(th):
        s, t, tot = system.init(k0), jnp.int32(0), 0.0
        count = 0
        for key in keys:
            _, data_key = jax.random.split(key)
            s, t, losses, _ = systems.unroll(system, th, s, t, data_key, trunc_len)
            n = min(trunc_len, 7 - count)
            tot = tot + jnp.sum(losses[:n])
            count += trunc_len
        return tot

    if 7 % trunc_len == 0:
        assert_trees_close(total, jax.jit(jax.grad(objective))(theta))
        if trunc_len == 7:
            assert_trees_close(total, exact)
    else:
        # The last truncation runs past the horizon into the next episode, whose losses do
        # not depend on theta through the old episode: compare whole truncations.
        def objective_all(th):
            s, t, tot = system.init(k0), jnp.int32(0), 0.0
            for key in keys:
                _, data_key = jax.random.split(key)
                s, t, losses, _ = systems.unroll(system, th, s, t, data_key, trunc_len)
                tot = tot + jnp.sum(losses)
            return tot

        assert_trees_close(total, jax.jit(jax.grad(objective_all))(theta))


def _reference_grad(name, system, theta, init_key, key, **hp):
    """The independent NumPy loop (tests/reference.py): PES and ES share the particle engine,
    `sample_noise` and `combine`, so a bug there would cancel in PES == ES alone."""
    ref = reference.REFERENCES[name](system, theta, **hp).init(init_key, theta)
    return ref, ref.flat.unravel(ref.estimate(key, theta))


def test_pes_with_full_truncations_equals_full_es():
    system = dict_system(horizon=5, dtype=jnp.float64)
    theta = dict_theta(jnp.float64)
    k0 = jax.random.key(0)
    hp = dict(trunc_len=5, sigma=0.1, num_particles=6)
    p = make("pes", system, **hp)
    e = make("es", system, **hp)
    sp, se = p.init(k0, theta), e.init(k0, theta)
    ref = reference.RefES(system, theta, **hp).init(k0, theta)
    for i in range(3):
        key = jax.random.fold_in(k0, i)
        gp, sp, ap = p.estimate(key, theta, sp)
        ge, se, ae = e.estimate(key, theta, se)
        assert_trees_close(gp, ge)
        assert_trees_close(ge, ref.flat.unravel(ref.estimate(key, theta)), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(float(ap["loss"]), float(ae["loss"]), rtol=1e-12)
        assert_trees_close(jax.tree.map(jnp.zeros_like, sp.accum), sp.accum, atol=0)


def test_pes_first_truncation_equals_truncated_es():
    system = dict_system(horizon=12, dtype=jnp.float64)
    theta = dict_theta(jnp.float64)
    k0, k1 = jax.random.key(0), jax.random.key(1)
    hp = dict(trunc_len=3, sigma=0.1, num_particles=6)
    p = make("pes", system, **hp)
    e = make("es", system, **hp)
    gp, sp, _ = p.estimate(k1, theta, p.init(k0, theta))
    ge, _, _ = e.estimate(k1, theta, e.init(k0, theta))
    assert_trees_close(gp, ge)
    _, want = _reference_grad("pes", system, theta, k0, k1, **hp)
    assert_trees_close(gp, want, rtol=1e-9, atol=1e-12)
    # The + and - members of each pair were unrolled with theta + eps and theta - eps:
    # their states must differ (they are separate states, not one shared state).
    assert not np.allclose(np.asarray(sp.inner[:, 0]), np.asarray(sp.inner[:, 1]))


@pytest.mark.parametrize("name", ["pes", "es"])
def test_antithetic_estimates_ignore_constant_loss_offsets_and_common_noise(name):
    """Common random numbers: every particle sees the same keys, so key-driven loss noise
    (and any constant offset) cancels exactly within each antithetic pair."""
    theta = dict_theta(jnp.float64)
    k0, k1 = jax.random.key(0), jax.random.key(1)
    clean = dict_system(horizon=6, dtype=jnp.float64)
    noisy = dict_system(horizon=6, dtype=jnp.float64, noise=100.0)
    est_c = make(name, clean, trunc_len=4, sigma=0.1, num_particles=8)
    est_n = make(name, noisy, trunc_len=4, sigma=0.1, num_particles=8)
    sc, sn = est_c.init(k0, theta), est_n.init(k0, theta)
    for i in range(3):
        key = jax.random.fold_in(k1, i)
        gc, sc, _ = est_c.estimate(key, theta, sc)
        gn, sn, _ = est_n.estimate(key, theta, sn)
        assert_trees_close(gc, gn, rtol=1e-9, atol=1e-9)


def test_loss_scaling_scales_the_pes_estimate():
    system = dict_system(horizon=6, dtype=jnp.float64)
    scaled = system._replace(
        step=lambda th, s, k: (lambda out: (out[0], 3.0 * out[1]))(system.step(th, s, k))
    )
    theta = dict_theta(jnp.float64)
    k0, k1 = jax.random.key(0), jax.random.key(1)
    a = make("pes", system, trunc_len=4, sigma=0.1, num_particles=4)
    b = make("pes", scaled, trunc_len=4, sigma=0.1, num_particles=4)
    ga, _, _ = a.estimate(k1, theta, a.init(k0, theta))
    gb, _, _ = b.estimate(k1, theta, b.init(k0, theta))
    assert_trees_close(jax.tree.map(lambda x: 3.0 * x, ga), gb)


def test_pes_accumulator_bookkeeping_across_mid_truncation_resets():
    """T=5, K=3. Truncations cover t = (0,1,2) (3,4|0) (1,2,3) (4|0,1) (2,3,4|)."""
    task = tasks.make("linear_quadratic", dim=2, horizon=5)
    theta = jnp.array([0.2, -0.1])
    est = make("pes", task.system, trunc_len=3, sigma=0.1, num_particles=2)
    k0 = jax.random.key(0)
    state = est.init(k0, theta)
    e, accums = [], []
    for i in range(5):
        key = jax.random.fold_in(k0, i)
        noise_key, _ = jax.random.split(key)
        e.append(np.asarray(sample_noise(noise_key, theta, 1, 0.1))[0])
        _, state, _ = est.estimate(key, theta, state)
        accums.append(np.asarray(state.accum[0]))
    expected = [e[0], e[1], e[1] + e[2], e[3], np.zeros(2)]
    np.testing.assert_allclose(np.stack(accums), np.stack(expected), rtol=1e-12, atol=1e-15)
    assert int(state.t[0]) == 0
