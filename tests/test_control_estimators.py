"""ES / PES / ARS / OpenAI-ES on host-stepped control tasks, and the divide_by_variance option."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pes
from pes import outer, systems, tasks
from pes.estimators import _common, baselines
from tests.test_unbiasedness import detectable_bias

pytestmark = pytest.mark.numerics  # exact equivalences: rerun by `make test-portable`

HORIZON, K = 20, 5


def _theta0(dim=2):
    return 0.3 * jnp.arange(dim * 3, dtype=jnp.float64).reshape(dim, 3) / (dim * 3) - 0.1


def test_host_environment_equals_its_jax_twin():
    host = tasks.make("linear_control", horizon=HORIZON)
    twin = tasks.make("linear_control", horizon=HORIZON, host=False)
    theta = _theta0()
    start = host.system.init(jax.random.key(0))
    run = lambda sys: systems.unroll(sys, theta, start, jnp.zeros((), jnp.int32), jax.random.key(1), 27)
    a, b = run(host.system), run(twin.system)
    for x, y in zip(a, b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-13, atol=1e-15)  # XLA may fuse a*s+b


def _episode_estimates(name, trunc_len, num_repeats, num_particles, **hp):
    """Sum of the estimates over one whole episode at fixed theta, for independent repeats."""
    task = tasks.make("linear_control", horizon=HORIZON)
    est = pes.estimators.make(
        name, task.system, trunc_len=trunc_len, sigma=0.1, num_particles=num_particles, **hp
    )
    theta = _theta0()
    n_calls = HORIZON // trunc_len

    def one(key):
        init_key, run_key = jax.random.split(key)
        state = est.init(init_key, theta)

        def body(state, k):
            g, state, _ = est.estimate(k, theta, state)
            return state, g

        _, grads = jax.lax.scan(body, state, jax.random.split(run_key, n_calls))
        return jnp.sum(grads, axis=0)

    return np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(42), num_repeats)))


def _true_gradient():
    twin = tasks.make("linear_control", horizon=HORIZON, host=False)
    f = lambda th: systems.full_objective(twin.system, th, jax.random.key(0), jax.random.key(0))
    return np.asarray(jax.grad(f)(_theta0()))


def _z_scores(samples, target):
    mean = samples.mean(0)
    se = samples.std(0, ddof=1) / np.sqrt(len(samples))
    return np.abs(mean - target) / se


def test_pes_unbiased_and_truncated_es_biased_on_linear_environment():
    """The return is quadratic in theta, so E[estimate] is the exact gradient for unbiased
    estimators; tolerances come from the standard error over independent repeats."""
    target = _true_gradient()
    assert np.abs(target).max() > 1.0  # a non-trivial gradient
    pes_est = _episode_estimates("pes", K, 800, 64)
    z_pes = _z_scores(pes_est, target)
    assert z_pes.max() < 4.5, z_pes
    full_es = _episode_estimates("es", HORIZON, 1300, 64)
    assert _z_scores(full_es, target).max() < 4.5
    # Power: a bias of 5 % of the gradient (any direction) fails.
    for samples in (pes_est, full_es):
        flat = samples.reshape(len(samples), -1)
        assert detectable_bias(flat, target.ravel()) <= 0.05, detectable_bias(flat, target.ravel())
    tes = _episode_estimates("es", K, 64, 100)
    z_tes = _z_scores(tes, target)
    assert z_tes.max() > 20, z_tes  # negative control: truncated ES misses earlier-truncation influence
    # Truncated ES is nearly deterministic here (quadratic + antithetic), so its error is bias, not noise.
    rel_bias = np.linalg.norm(tes.mean(0) - target) / np.linalg.norm(target)
    assert rel_bias > 0.2


def test_pes_unbiased_with_reset_inside_truncation():
    """K=3 does not divide T=20: PES summed over 20 truncations (3 episodes) stays unbiased."""
    task = tasks.make("linear_control", horizon=HORIZON)
    est = pes.estimators.make("pes", task.system, trunc_len=3, sigma=0.1, num_particles=100)
    theta = _theta0()

    def one(key):
        state = est.init(key, theta)

        def body(state, k):
            g, state, _ = est.estimate(k, theta, state)
            return state, (g, state.t)

        _, (grads, ts) = jax.lax.scan(body, state, jax.random.split(key, 20))
        return jnp.sum(grads, axis=0), ts

    grads, ts = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(3), 400))
    np.testing.assert_array_equal(np.asarray(ts[0, -1]), 0)  # 60 steps = 3 whole episodes
    z = _z_scores(np.asarray(grads), 3 * _true_gradient())
    assert z.max() < 4.5, z
    flat = np.asarray(grads).reshape(len(grads), -1)
    assert detectable_bias(flat, 3 * _true_gradient().ravel()) <= 0.05


# --------------------------------------------------------------------------- reference formulas
# A stateless "bandit" system: every step costs c . theta, so a particle's unroll objective
# is K c . (theta + s eps) in closed form and the estimators' formulas can be checked exactly.


def _bandit(horizon=4):
    c = jnp.array([[1.0, -2.0, 0.5], [0.3, 0.0, -1.0]])

    def step(theta, state, key):
        del key
        return state + 1.0, jnp.sum(c * theta)

    return systems.UnrolledSystem(lambda key: jnp.zeros(()), step, horizon, "sum"), np.asarray(c)


def _noise_and_objectives(key, theta, sigma, num_pairs, c, trunc_len):
    noise_key, _ = _common.split_key(key)
    eps = np.asarray(_common.sample_noise(noise_key, theta, num_pairs, sigma))  # (G, 2, 3)
    th = np.asarray(theta)
    plus = trunc_len * np.sum(c * (th + eps), axis=(1, 2))
    minus = trunc_len * np.sum(c * (th - eps), axis=(1, 2))
    return eps, np.stack([plus, minus], axis=1)  # (G, 2)


@pytest.mark.parametrize("name", ["es", "pes"])
def test_divide_by_variance_matches_ars_v1_formula(name):
    system, c = _bandit()
    theta = jnp.full((2, 3), 0.2)
    sigma, pairs, k = 0.3, 5, 2
    est = pes.estimators.make(
        name, system, trunc_len=k, sigma=sigma, num_particles=2 * pairs, divide_by_variance=True
    )
    plain = pes.estimators.make(name, system, trunc_len=k, sigma=sigma, num_particles=2 * pairs)
    key = jax.random.key(11)
    g, _, _ = est.estimate(key, theta, est.init(jax.random.key(0), theta))
    g0, _, _ = plain.estimate(key, theta, plain.init(jax.random.key(0), theta))
    eps, obj = _noise_and_objectives(key, theta, sigma, pairs, c, k)
    unit = eps / sigma
    ref = np.einsum("g,gij->ij", obj[:, 0] - obj[:, 1], unit) / (pairs * obj.std())
    np.testing.assert_allclose(np.asarray(g), ref, rtol=1e-10)
    ref_plain = np.einsum("g,gij->ij", obj[:, 0] - obj[:, 1], eps) / (2 * pairs * sigma**2)
    np.testing.assert_allclose(np.asarray(g0), ref_plain, rtol=1e-10)  # default path: the plain estimate
    assert "divide_by_variance" not in plain.hparams
    with pytest.raises(ValueError, match=r"divide_by_variance=1 is invalid; allowed: true, false"):
        pes.estimators.make(name, system, trunc_len=k, sigma=sigma, num_particles=2, divide_by_variance=1)


def test_ars_top_directions_formula_and_v1_equivalence():
    system, c = _bandit()
    theta = jnp.full((2, 3), -0.1)
    sigma, pairs, b, k = 0.05, 6, 2, 4
    key = jax.random.key(5)
    ars = pes.estimators.make(
        "ars", system, trunc_len=k, sigma=sigma, num_particles=2 * pairs, top_directions=b
    )
    g, _, aux = ars.estimate(key, theta, ars.init(jax.random.key(0), theta))
    eps, obj = _noise_and_objectives(key, theta, sigma, pairs, c, k)
    top = np.argsort(obj.min(axis=1))[:b]
    kept = obj[top]
    ref = np.einsum("g,gij->ij", kept[:, 0] - kept[:, 1], eps[top] / sigma) / (b * kept.std())
    np.testing.assert_allclose(np.asarray(g), ref, rtol=1e-10)
    np.testing.assert_allclose(float(aux["loss"]), obj.mean(), rtol=1e-12)
    # With every pair kept ARS V1 is ES with divide_by_variance over whole episodes.
    v1 = pes.estimators.make("ars", system, trunc_len=k, sigma=sigma, num_particles=2 * pairs)
    es = pes.estimators.make(
        "es", system, trunc_len=k, sigma=sigma, num_particles=2 * pairs, divide_by_variance=True
    )
    g1, _, _ = v1.estimate(key, theta, v1.init(jax.random.key(0), theta))
    g2, _, _ = es.estimate(key, theta, es.init(jax.random.key(0), theta))
    np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), rtol=1e-10)
    with pytest.raises(ValueError, match=r"top_directions=7 is invalid; allowed: an integer in \[1, 6\]"):
        pes.estimators.make("ars", system, trunc_len=k, sigma=sigma, num_particles=12, top_directions=7)


def test_openai_es_centred_rank_formula():
    system, c = _bandit()
    theta = jnp.full((2, 3), 0.4)
    sigma, pairs, k = 0.2, 4, 4
    key = jax.random.key(8)
    est = pes.estimators.make("openai_es", system, trunc_len=k, sigma=sigma, num_particles=2 * pairs)
    g, _, _ = est.estimate(key, theta, est.init(jax.random.key(0), theta))
    eps, obj = _noise_and_objectives(key, theta, sigma, pairs, c, k)
    ranks = np.argsort(np.argsort(obj.ravel())).reshape(obj.shape) / (obj.size - 1) - 0.5
    ref = np.einsum("g,gij->ij", ranks[:, 0] - ranks[:, 1], eps / sigma) / (obj.size * sigma)
    np.testing.assert_allclose(np.asarray(g), ref, rtol=1e-10)
    np.testing.assert_allclose(
        np.asarray(baselines.centred_ranks(jnp.array([3.0, -1.0, 2.0]))), [0.5, -0.5, 0.0]
    )


@pytest.mark.parametrize(
    "name,hp,opt",
    [
        ("ars", dict(num_particles=8, top_directions=2, sigma=0.1), optax.sgd(0.05)),
        ("openai_es", dict(num_particles=16, sigma=0.1), optax.adam(0.05)),
        ("pes", dict(num_particles=16, sigma=0.1, divide_by_variance=True), optax.sgd(0.05)),
    ],
)
def test_baselines_improve_the_linear_environment(name, hp, opt):
    """Each method raises the evaluation return of the deterministic linear environment."""
    task = tasks.make("linear_control", horizon=HORIZON)
    est = pes.estimators.make(name, task.system, trunc_len=HORIZON if name != "pes" else K, **hp)
    before = float(task.evaluate(task.theta_init, jax.random.key(0))["eval_return"])
    state, _ = outer.run(jax.random.key(1), task.theta_init, est, opt, num_steps=60, log_every=60)
    after = float(task.evaluate(state.theta, jax.random.key(0))["eval_return"])
    assert after > before + 0.5 * abs(before), (before, after)
