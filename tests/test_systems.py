"""The unroll helper: resets at the horizon, key discipline, objectives, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pes import systems, tasks
from tests.helpers import random_init_linear

pytestmark = pytest.mark.numerics  # exact equivalences: rerun by `make test-portable`


def test_reset_at_horizon_restores_fresh_init_with_the_reset_key():
    system = random_init_linear(horizon=5)
    theta = jnp.array([0.1, 0.2, 0.3])
    key = jax.random.key(0)
    state0 = system.init(jax.random.key(9))
    state, t, losses, ends = systems.unroll(system, theta, state0, jnp.int32(3), key, 4)
    # t: 3 -> 4 -> 5 (end, reset to 0) -> 1 -> 2
    np.testing.assert_array_equal(np.asarray(ends), [False, True, False, False])
    assert int(t) == 2
    keys = systems.step_keys(key, 4)
    s = system.step(theta, system.step(theta, state0, keys[0, 0])[0], keys[1, 0])[0]
    s = system.init(keys[1, 1])  # the episode ended after step 1: fresh init with its reset key
    for j in (2, 3):
        s, _ = system.step(theta, s, keys[j, 0])
    np.testing.assert_allclose(np.asarray(state), np.asarray(s), rtol=1e-12)
    assert losses.shape == (4,)


def test_no_horizon_never_resets():
    task = tasks.make("influence_balancing")
    state, t, losses, ends = systems.unroll(
        task.system, task.theta_init, task.system.init(None), jnp.int32(0), jax.random.key(0), 50
    )
    assert not np.any(np.asarray(ends)) and int(t) == 50


def test_full_objective_sum_and_last():
    lq = tasks.make("linear_quadratic", dim=2, horizon=6, decay=0.5)
    theta = jnp.array([0.3, -0.1])
    # Hand loop.
    s, total = np.zeros(2), 0.0
    for _ in range(6):
        s = 0.5 * s + np.asarray(theta)
        total += 0.5 * np.sum((s - 1.0) ** 2)
    key = jax.random.key(0)
    np.testing.assert_allclose(float(systems.full_objective(lq.system, theta, key, key)), total, rtol=1e-12)

    ib = tasks.make("influence_balancing", horizon=6)
    full = systems.full_objective(ib.system, jnp.float64(0.2), key, key, trunc_len=3)
    _, _, losses, _ = systems.unroll(ib.system, jnp.float64(0.2), ib.system.init(key), jnp.int32(0), key, 6)
    np.testing.assert_allclose(float(full), float(losses[2] + losses[5]), rtol=1e-12)
    with pytest.raises(ValueError, match="trunc_len=4"):
        systems.full_objective(ib.system, jnp.float64(0.2), key, key, trunc_len=4)


def test_influence_balancing_optimum_and_initial_loss():
    task = tasks.make("influence_balancing")
    key = jax.random.key(0)
    # Spec E1: loss 8.0 at theta = 0.5 (steady state) and 0 at theta = -1/6.
    np.testing.assert_allclose(float(task.evaluate(jnp.float64(0.5), key)["loss"]), 8.0, rtol=1e-6)
    assert float(task.evaluate(jnp.float64(-1 / 6), key)["loss"]) < 1e-20


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(unroll_loss="mean"), "unroll_loss='mean' is invalid; allowed: sum, last"),
        (dict(horizon=0), "horizon=0 is invalid"),
        (dict(horizon=2.5), "horizon=2.5 is invalid"),
    ],
)
def test_bad_system_metadata(kwargs, match):
    system = random_init_linear()._replace(**kwargs)
    with pytest.raises(ValueError, match=match):
        systems.check_system(system)


def test_bad_task_parameters():
    with pytest.raises(ValueError, match="task='nope' is unknown; allowed: "):
        tasks.make("nope")
    with pytest.raises(ValueError, match="has no parameter sigmaa"):
        tasks.make("influence_balancing", sigmaa=1)
    with pytest.raises(ValueError, match="n=0 is invalid"):
        tasks.make("influence_balancing", n=0)


@pytest.mark.parametrize(
    "task, kwargs, match",
    [
        (
            "mnist_lr_schedule",
            dict(batch_size=0),
            "task 'mnist_lr_schedule': batch_size=0 is invalid; allowed: an integer >= 1",
        ),
        (
            "mnist_lr_schedule",
            dict(hidden=[32, 0]),
            "hidden=\\[32, 0\\] is invalid; allowed: a list of positive integers",
        ),
        ("lopt_image_mlp", dict(horizon=True), "task 'lopt_image_mlp': horizon=True is invalid"),
        ("lopt_image_mlp", dict(eval_seed=-1), "eval_seed=-1 is invalid; allowed: an integer >= 0"),
    ],
)
def test_data_task_parameters_fail_before_loading_data(task, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tasks.make(task, **kwargs)
