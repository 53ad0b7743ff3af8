"""The Lorenz parameter-learning task: equations, optimum, chaos, evaluation, errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pes import estimators, systems, tasks


def test_one_step_is_explicit_euler_and_the_loss_is_the_z_error():
    task = tasks.make("lorenz", horizon=10, dt=0.01)
    theta = {"log_a": jnp.log(12.0), "log_r": jnp.log(30.0)}
    state = task.system.init(jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(state), [1.2, 1.3, 1.6, 1.2, 1.3, 1.6])
    new, loss = task.system.step(theta, state, jax.random.key(1))
    x, y, z, dt, b = 1.2, 1.3, 1.6, 0.01, 8 / 3
    model = [x + 12 * (y - x) * dt, y + (x * (30 - z) - y) * dt, z + (x * y - b * z) * dt]
    ref = [x + 10 * (y - x) * dt, y + (x * (28 - z) - y) * dt, z + (x * y - b * z) * dt]
    np.testing.assert_allclose(np.asarray(new), model + ref, rtol=1e-14)
    np.testing.assert_allclose(float(loss), (model[2] - ref[2]) ** 2 / 10, rtol=1e-12)


def test_true_parameters_give_zero_loss_and_theta0_does_not():
    task = tasks.make("lorenz", horizon=300, eval_inits=8)
    truth = {k: jnp.asarray(v) for k, v in task.optimum.items()}
    out = jax.jit(task.evaluate)(truth, None)
    assert float(out["train_loss"]) < 1e-20 and float(out["test_loss"]) < 1e-20
    assert math.isclose(float(out["a"]), 10.0) and math.isclose(float(out["r"]), 28.0)
    start = jax.jit(task.evaluate)(task.theta_init, None)
    assert float(start["train_loss"]) > 1.0 and float(start["test_loss"]) > 1.0
    # the evaluation is deterministic (fixed start points) and the train loss is the objective
    key = jax.random.key(0)
    full = systems.full_objective(task.system, task.theta_init, key, key)
    np.testing.assert_allclose(float(start["train_loss"]), float(full), rtol=1e-12)


def test_the_exact_gradient_of_a_long_episode_explodes():
    """Chaos: the backprop gradient of T = 2000 steps is orders of magnitude larger than that
    of T = 200 (what ES smoothing is for)."""
    key = jax.random.key(0)
    norms = {}
    for horizon in (200, 2000):
        task = tasks.make("lorenz", horizon=horizon)
        system = task.system
        grad = jax.grad(lambda th, s=system: systems.full_objective(s, th, key, key))(task.theta_init)
        norms[horizon] = float(jnp.sqrt(sum(g**2 for g in jax.tree.leaves(grad))))
    assert norms[2000] > 100 * norms[200], norms


def test_random_start_points_follow_the_reset_key():
    task = tasks.make("lorenz", horizon=20, init_noise=1.0)
    a, b = task.system.init(jax.random.key(0)), task.system.init(jax.random.key(1))
    assert not np.allclose(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(a[:3]), np.asarray(a[3:]))  # model and reference agree


def test_estimators_run_on_lorenz():
    task = tasks.make("lorenz", horizon=40)
    for name, kw in (("nres", {}), ("gpes", {"noise_every": 8}), ("pes", {}), ("es", {})):
        est = estimators.make(name, task.system, trunc_len=4, sigma=0.04, num_particles=8, stagger=True, **kw)
        state = est.init(jax.random.key(0), task.theta_init)
        grad, state, aux = jax.jit(est.estimate)(jax.random.key(1), task.theta_init, state)
        assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grad))
        assert np.isfinite(float(aux["loss"]))


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(dt=0.0), "dt=0.0 is invalid"),
        (dict(horizon=0), "horizon=0 is invalid"),
        (dict(init_point=[1.0, 2.0]), "init_point=\\[1.0, 2.0\\] is invalid"),
        (dict(init_noise=-1.0), "init_noise=-1.0 is invalid"),
        (dict(init_log_a=float("nan")), "init_log_a=nan is invalid"),
    ],
)
def test_bad_parameters_raise_one_line_errors(kw, match):
    with pytest.raises(ValueError, match=f"task 'lorenz': {match}"):
        tasks.make("lorenz", **kw)
