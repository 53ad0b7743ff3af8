"""Every registered estimator honours the API: pytree theta, jit, scan, vmap, determinism."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pes import estimators, outer
from tests.estimator_smoke import HPARAMS  # the same small settings as the core-install smoke run
from tests.helpers import assert_trees_close, dict_system, dict_theta, jitted, keyed_system, tree_vector


def test_registry_covers_the_paper_methods():
    assert set(estimators.REGISTRY) >= {"pes", "es", "tbptt", "rtrl", "uoro"}
    assert set(HPARAMS) == set(estimators.REGISTRY)


def test_which_estimators_differentiate_the_step_is_read_off_the_registry(monkeypatch):
    """The autodiff methods (and PES-A's analytic term) differentiate the step; the ES family
    never does, so only they may run on an objective that is not differentiable."""
    differentiating = {n for n in estimators.REGISTRY if estimators.differentiates_step(n)}
    assert differentiating == {"pes_a", "tbptt", "rtrl", "uoro"}
    assert estimators.derivative_free() == ["ars", "es", "gpes", "nres", "openai_es", "pes"]
    # negative control: a new estimator that differentiates is found without being listed
    def grad_of_loss(system, *, trunc_len):
        def estimate(key, theta, state):
            def loss(th):
                return system.step(th, system.init(key), key)[1]

            return jax.grad(loss)(theta), state, {"loss": loss(theta)}

        return estimators.GradientEstimator(lambda k, t: 0, estimate, "new", {}, trunc_len, trunc_len)

    monkeypatch.setitem(estimators.REGISTRY, "new_grad", grad_of_loss)
    estimators.differentiates_step.cache_clear()
    try:
        assert estimators.differentiates_step("new_grad")
        assert "new_grad" not in estimators.derivative_free()
    finally:
        estimators.differentiates_step.cache_clear()


@pytest.fixture(params=sorted(estimators.REGISTRY))
def name(request):
    return request.param


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_grad_matches_theta_tree_shape_dtype(name, dtype):
    system = dict_system(horizon=6, dtype=dtype)
    theta = dict_theta(dtype)
    est = jitted(estimators.make(name, system, **HPARAMS[name]))
    key = jax.random.key(0)
    state = est.init(key, theta)
    for i in range(3):  # crosses the horizon (6) mid-truncation for K=4
        grad, state, aux = est.estimate(jax.random.fold_in(key, i), theta, state)
        assert jax.tree.structure(grad) == jax.tree.structure(theta)
        for g, t in zip(jax.tree.leaves(grad), jax.tree.leaves(theta)):
            assert g.shape == t.shape and g.dtype == t.dtype
            assert np.all(np.isfinite(np.asarray(g)))
        assert "loss" in aux and np.isfinite(float(aux["loss"]))


@pytest.mark.numerics
def test_same_key_same_output_other_key_other_output(name):
    """Determinism that can fail: a second, jitted estimator from a fresh ``init`` with the
    same keys gives the same numbers (float64, to rounding); another estimate key gives
    another estimate (the system's data come from the keys, so even the deterministic
    gradient methods must change)."""
    system, theta = keyed_system(), dict_theta(jnp.float64)
    est = estimators.make(name, system, **HPARAMS[name])
    key = jax.random.key(1)
    g1, s1, a1 = est.estimate(key, theta, est.init(key, theta))
    fresh = jitted(est)
    g2, s2, a2 = fresh.estimate(key, theta, fresh.init(key, theta))
    assert_trees_close(g1, g2, rtol=1e-10, atol=1e-12)
    assert_trees_close(s1, s2, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(float(a1["loss"]), float(a2["loss"]), rtol=1e-12)
    g3, _, _ = fresh.estimate(jax.random.key(2), theta, fresh.init(key, theta))  # same compiled call
    assert not np.allclose(tree_vector(g1), tree_vector(g3), rtol=1e-6, atol=0), name


@pytest.mark.numerics
def test_inside_scan_and_vmap_over_keys(name):
    system, theta = dict_system(), dict_theta()
    est = estimators.make(name, system, **HPARAMS[name])

    def episode(key):
        state = est.init(key, theta)

        def body(state, i):
            grad, state, aux = est.estimate(jax.random.fold_in(key, i), theta, state)
            return state, (grad, aux["loss"])

        _, (grads, losses) = jax.lax.scan(body, state, jnp.arange(3))
        return grads, losses

    grads, losses = jax.jit(jax.vmap(episode))(jax.random.split(jax.random.key(2), 5))
    assert losses.shape == (5, 3)
    assert grads["W"].shape == (5, 3, 3, 3)
    # The same episode run alone gives the same numbers as inside the vmap.
    single, _ = jax.jit(episode)(jax.random.split(jax.random.key(2), 5)[3])
    np.testing.assert_allclose(np.asarray(single["a"]), np.asarray(grads["a"][3]), rtol=1e-5, atol=1e-6)


def test_compiles_once_over_outer_steps(name):
    system, theta = dict_system(), dict_theta()
    est = estimators.make(name, system, **HPARAMS[name])
    estimate = jax.jit(est.estimate)
    key = jax.random.key(3)
    state = est.init(key, theta)
    for i in range(4):
        _, state, _ = estimate(jax.random.fold_in(key, i), theta, state)
    assert estimate._cache_size() == 1

    opt = optax.adam(1e-2)
    chunk = outer.make_chunk(est, opt, log_every=2, num_logs=2)
    train_state = outer.init_state(key, theta, est, opt)
    for _ in range(3):
        train_state, metrics = chunk(train_state)
    assert chunk._cache_size() == 1
    assert int(train_state.step) == 12
    np.testing.assert_array_equal(np.asarray(metrics["outer_step"]), [10, 12])


@pytest.mark.parametrize("name", ["rtrl", "uoro", "tbptt"])
def test_float64_theta_with_a_float32_inner_state(name):
    """Mixed precision (x64 theta, float32 model state) must work for the gradient methods."""
    system = dict_system(horizon=6, dtype=jnp.float32)
    theta = dict_theta(jnp.float64)
    est = estimators.make(name, system, **HPARAMS[name])
    key = jax.random.key(0)
    state = est.init(key, theta)
    for i in range(2):
        grad, state, _ = jax.jit(est.estimate)(jax.random.fold_in(key, i), theta, state)
    assert all(g.dtype == jnp.float64 for g in jax.tree.leaves(grad))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grad))
