"""Truncated ES with staggered per-pair states (es(stagger=True)), against a hand loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pes import estimators, systems
from pes.estimators import _common
from tests.helpers import assert_trees_close, jitted, random_init_linear

pytestmark = pytest.mark.numerics  # exact equivalences: rerun by `make test-portable`

HORIZON, K, SIGMA, N = 10, 3, 0.3, 8


def burn_in_reference(system, theta, key):
    """The documented init: split(key, 3) -> state, offset, burn-in keys; step j of the burn-in
    uses step_keys(burn_key, T - 1)[j, 0]; group g takes offset_g steps with theta."""
    state_key, offset_key, burn_key = jax.random.split(key, 3)
    offsets = np.asarray(jax.random.randint(offset_key, (N // 2,), 0, HORIZON, jnp.int32))
    keys = systems.step_keys(burn_key, HORIZON - 1)
    step = jax.jit(system.step)
    states = []
    for off in offsets:
        s = system.init(state_key)
        for j in range(off):
            s, _ = step(theta, s, keys[j, 0])
        states.append(s)
    return jnp.stack(states), offsets


def test_init_starts_each_pair_at_its_own_offset():
    system = random_init_linear(horizon=HORIZON)
    theta = jnp.array([0.2, -0.1, 0.3])
    est = estimators.make("es", system, trunc_len=K, sigma=SIGMA, num_particles=N, stagger=True)
    key = jax.random.key(11)
    state = est.init(key, theta)
    want_inner, want_t = burn_in_reference(system, theta, key)
    np.testing.assert_array_equal(np.asarray(state.t), want_t)
    assert len(set(want_t.tolist())) > 1  # the pairs really are staggered
    assert_trees_close(state.inner, want_inner)


def test_estimate_equals_per_pair_truncated_es():
    system = random_init_linear(horizon=HORIZON)
    theta = jnp.array([0.2, -0.1, 0.3])
    est = jitted(estimators.make("es", system, trunc_len=K, sigma=SIGMA, num_particles=N, stagger=True))
    state = est.init(jax.random.key(5), theta)
    key = jax.random.key(7)
    unroll = jax.jit(lambda th, s, t, k: systems.unroll(system, th, s, t, k, K))  # the hand loop's unroll
    for _ in range(4):  # several truncations, so resets fall inside some of them
        grad, new_state, aux = est.estimate(key, theta, state)
        noise_key, data_key = _common.split_key(key)
        eps = _common.sample_noise(noise_key, theta, N // 2, SIGMA)
        want = np.zeros(3)
        losses_all = []
        for g in range(N // 2):
            s, t = state.inner[g], state.t[g]
            lp = unroll(theta + eps[g], s, t, data_key)[2]
            lm = unroll(theta - eps[g], s, t, data_key)[2]
            losses_all += [jnp.sum(lp), jnp.sum(lm)]
            want += float(jnp.sum(lp) - jnp.sum(lm)) * np.asarray(eps[g]) / (N * SIGMA**2)
            s_new, t_new, _, _ = unroll(theta, s, t, data_key)
            np.testing.assert_allclose(np.asarray(new_state.inner[g]), np.asarray(s_new), rtol=1e-12)
            assert int(new_state.t[g]) == int(t_new)
        np.testing.assert_allclose(np.asarray(grad), want, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(float(aux["loss"]), float(np.mean(losses_all)), rtol=1e-12)
        state, key = new_state, jax.random.fold_in(key, 1)
    assert est.cost_per_estimate == N * K + (N // 2) * K


def test_default_is_the_shared_state_estimator():
    system = random_init_linear(horizon=HORIZON)
    theta = jnp.array([0.2, -0.1, 0.3])
    est = estimators.make("es", system, trunc_len=K, sigma=SIGMA, num_particles=N)
    assert not est.hparams.get("stagger", False)
    state = est.init(jax.random.key(5), theta)
    assert jnp.ndim(state.t) == 0


@pytest.mark.parametrize(
    "horizon, unroll_loss, message",
    [(None, "sum", "horizon=None"), (10, "last", "unroll_loss='last'")],
)
def test_stagger_refused_where_undefined(horizon, unroll_loss, message):
    system = random_init_linear(horizon=10)._replace(horizon=horizon, unroll_loss=unroll_loss)
    with pytest.raises(ValueError, match=message):
        estimators.make("es", system, trunc_len=1, sigma=0.1, num_particles=2, stagger=True)
    with pytest.raises(ValueError, match="stagger=1"):
        estimators.make("es", random_init_linear(), trunc_len=1, sigma=0.1, num_particles=2, stagger=1)
