"""pes.search: random search against a NumPy re-scoring, batching, best-so-far and bad inputs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pes import search
from pes.systems import UnrolledSystem

T = 6


def toy_system():
    """x' = x - exp(a) (x - b) + 0.1 noise; loss (x' - 1)^2; x0 ~ N(0, 1) from the reset key."""

    def init(key):
        return jax.random.normal(key, (), jnp.float64)

    def step(theta, x, key):
        x = x - jnp.exp(theta["a"]) * (x - theta["b"][0]) + 0.1 * jax.random.normal(key, (), x.dtype)
        return x, (x - 1.0) ** 2

    return UnrolledSystem(init=init, step=step, horizon=T, unroll_loss="sum")


def numpy_score(theta, keys):
    """The same score, re-computed step by step in NumPy (only the random numbers come from JAX)."""
    totals = []
    for key in keys:
        init_key, data_key = jax.random.split(key)
        x = float(jax.random.normal(init_key, (), jnp.float64))
        step_keys = jax.random.split(data_key, (T, 2))
        total = 0.0
        for t in range(T):
            noise = float(jax.random.normal(step_keys[t, 0], (), jnp.float64))
            x = x - math.exp(float(theta["a"])) * (x - float(theta["b"][0])) + 0.1 * noise
            total += (x - 1.0) ** 2
        totals.append(total)
    return float(np.mean(totals))


LOW = {"a": -3.0, "b": jnp.array([-2.0])}
HIGH = {"a": 0.5, "b": jnp.array([2.0])}
LIKE = {"a": jnp.zeros((), jnp.float64), "b": jnp.zeros((1,), jnp.float64)}


def test_random_search_matches_a_numpy_rescoring():
    result = search.random_search(
        toy_system(), jax.random.key(3), LOW, HIGH, num_configs=7, num_runs=3, chunk_size=3, like=LIKE
    )
    _, run_key = jax.random.split(jax.random.key(3))
    keys = search.run_keys(run_key, 3)
    for i in (0, 3, 6):
        theta = jax.tree.map(lambda x, i=i: x[i], result.configs)
        assert result.scores[i] == pytest.approx(numpy_score(theta, keys), rel=1e-10)
    np.testing.assert_array_equal(result.best, np.minimum.accumulate(result.scores))
    np.testing.assert_array_equal(result.total_compute, np.arange(1, 8) * 3 * T)
    # samples are uniform in the box: inside it, and spread over it
    a = np.asarray(result.configs["a"])
    assert a.shape == (7,) and np.all((a >= -3.0) & (a <= 0.5)) and a.max() - a.min() > 1.0
    assert np.asarray(result.configs["b"]).shape == (7, 1)


def test_chunking_does_not_change_scores():
    configs = search.uniform_configs(jax.random.key(0), LOW, HIGH, 5, LIKE)
    score = search.mean_objective(toy_system(), search.run_keys(jax.random.key(1), 2))
    run = jax.jit(search.score_configs, static_argnums=(0, 2))
    ref = np.asarray(run(score, configs, 5))
    for chunk in (2, 100):  # padded last chunk; one chunk bigger than the budget
        np.testing.assert_allclose(np.asarray(run(score, configs, chunk)), ref, rtol=1e-13)


def test_sampling_is_uniform_in_unconstrained_space():
    configs = search.uniform_configs(jax.random.key(0), {"x": -2.0}, {"x": 6.0}, 20000, {"x": jnp.zeros(())})
    x = np.asarray(configs["x"])
    assert x.min() >= -2.0 and x.max() <= 6.0
    assert abs(x.mean() - 2.0) < 0.06 and abs(x.std() - 8 / math.sqrt(12)) < 0.05


def test_diverging_configurations_score_inf():
    def step(theta, x, key):
        x = x * jnp.exp(theta)
        return x, jnp.where(x > 1e3, jnp.nan, x)

    system = UnrolledSystem(init=lambda k: jnp.ones(()), step=step, horizon=4, unroll_loss="sum")
    score = search.mean_objective(system, search.run_keys(jax.random.key(0), 2))
    scores = np.asarray(search.score_configs(score, jnp.array([0.0, 5.0, -1.0]), 2))
    assert scores[0] == pytest.approx(4.0) and scores[1] == math.inf and np.isfinite(scores[2])
    np.testing.assert_array_equal(search.best_so_far([np.nan, 3.0, np.inf, 1.0]), [np.inf, 3.0, 3.0, 1.0])


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ValueError, match=r"num_configs=0 is invalid; allowed: an integer >= 1"):
        search.random_search(toy_system(), jax.random.key(0), LOW, HIGH, num_configs=0, num_runs=2)
    with pytest.raises(ValueError, match=r"num_runs=0 is invalid"):
        search.random_search(toy_system(), jax.random.key(0), LOW, HIGH, num_configs=2, num_runs=0)
    with pytest.raises(ValueError, match=r"range \[1.0, 1.0\] is invalid; allowed: finite low < high"):
        search.uniform_configs(jax.random.key(0), {"x": 1.0}, {"x": 1.0}, 3)
    with pytest.raises(ValueError, match="different tree structures"):
        search.uniform_configs(jax.random.key(0), {"x": 1.0}, {"y": 2.0}, 3)
    with pytest.raises(ValueError, match="needs a finite horizon"):
        search.mean_objective(toy_system()._replace(horizon=None), search.run_keys(jax.random.key(0), 1))
    with pytest.raises(ValueError, match="chunk_size=0 is invalid"):
        search.score_configs(lambda th: th, jnp.zeros(3), 0)
