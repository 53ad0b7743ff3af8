"""Unbiasedness against exact gradients, with negative controls that must fail, and power.

Two kinds of checks.  (1) ES, PES and NRES on a key-dependent linear-quadratic system,
window by window against the exact conditional mean and variance for that window's keys
(tests/moments.py; see the block comment below).  (2) On deterministic systems (influence
balancing, the paper's central example, and the linear-quadratic task for UORO) the
estimator summed over truncations covering a whole number of episodes with theta fixed,
over R independent repetitions, must lie within Z standard errors of ``jax.grad`` of the
full objective in every coordinate; truncated ES and TBPTT on influence balancing must fail
the same check by a wide margin.

Every check states its power: `detectable_bias` is the smallest bias, relative to the exact
gradient's norm and in any direction, that it rejects with 95 % probability; the tests
assert it is at most 5 % (docs/library.md explains the power of these checks).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pes import estimators, systems, tasks
from tests import moments

Z = 5.0


def episode_sums(est, theta, num_truncations, episodes, reps, seed=0):
    """R independent sums of ``num_truncations`` estimates, divided by the episodes covered."""

    def one(key):
        state = est.init(jax.random.fold_in(key, 10_000), theta)

        def body(state, i):
            grad, state, _ = est.estimate(jax.random.fold_in(key, i), theta, state)
            return state, grad

        _, grads = jax.lax.scan(body, state, jnp.arange(num_truncations))
        return jax.tree.map(lambda g: jnp.sum(g, axis=0) / episodes, grads)

    keys = jax.random.split(jax.random.key(seed), reps)
    return np.asarray(jax.jit(jax.vmap(one))(keys))


def z_scores(samples, exact):
    mean = samples.mean(axis=0)
    se = samples.std(axis=0, ddof=1) / math.sqrt(samples.shape[0])
    return (mean - exact) / se, mean


def detectable_bias(samples, exact) -> float:
    """(Z + 1.645) standard errors of the worst coordinate, relative to ||exact||."""
    se = np.atleast_1d(samples.std(axis=0, ddof=1)) / math.sqrt(samples.shape[0])
    return (Z + moments.Z_POWER) * float(np.max(se)) / float(np.linalg.norm(np.atleast_1d(exact)))


def exact_grad(system, theta, trunc_len=None):
    key = jax.random.key(0)  # deterministic systems: keys do not matter
    return np.asarray(jax.grad(lambda th: systems.full_objective(system, th, key, key, trunc_len))(theta))


LQ = tasks.make("linear_quadratic", dim=3, decay=0.9, horizon=10)
THETA = jnp.array([0.3, -0.2, 0.5])


# --- ES, PES and NRES on a key-dependent system, against exact conditional moments -------
# tests/moments.py: on a linear-quadratic system with per-step data noise from the step key
# and a random initial state from the reset key, an estimator's sum over a window of
# truncations has, for the window's keys, an exact mean (PES, NRES, full ES: the gradient of
# the window's loss; truncated ES: the sum of each truncation's own gradient) and an exact
# E||g - mean||^2.  Each window is compared with its own keys' values (common random numbers
# between the estimator and the reference remove the keys' variance), so the tests see
# biases down to a few percent and noise-only bookkeeping errors (an accumulator that is
# never reset: variance x1.6-2.4; steps after a mid-truncation reset weighted by the old
# accumulator: x1.2 on the T=5, K=4 system below), as well as missing common random
# numbers and wrong reset keys (another trajectory than the keys say).  Each test asserts its
# own power: the smallest bias (relative to the gradient, in any direction) and the smallest
# relative variance excess that it rejects with 95 % probability.

REPS = 4000
PARTICLES = 16
MAX_DETECTABLE_BIAS = 0.05
MAX_DETECTABLE_EXCESS = 0.15
SYSTEMS = {
    "T8": dict(horizon=8),  # decay 0.8, data noise 0.5, initial states N(0, 1)
    "T7": dict(horizon=7),
    "T6": dict(horizon=6),
    "T5": dict(horizon=5),
    # resets at every position of a truncation; fast decay and spread initial states, so
    # that the steps after a reset carry much of the gradient (bookkeeping errors show)
    "T5-reset": dict(horizon=5, decay=0.5, init_scale=3.0, noise=0.2),
    "T7-reset": dict(horizon=7, decay=0.5, init_scale=3.0, noise=0.2),
}
# name: (estimator, system, K, options, truncations per window)
KEYED = {
    "pes-T8-K2": ("pes", "T8", 2, {}, 8),  # T a multiple of K, two episodes
    "pes-T5-K4": ("pes", "T5-reset", 4, {}, 5),  # resets inside truncations, four episodes
    "pes-T7-K3-stagger": ("pes", "T7", 3, {"stagger": True}, 7),
    "pes-T6-K3-single": ("pes", "T6", 3, {"antithetic": False}, 4),  # no pairs: mean only
    "nres-T8-K2": ("nres", "T8", 2, {}, 8),
    "nres-T5-K4": ("nres", "T5-reset", 4, {}, 5),
    "nres-T7-K3-stagger": ("nres", "T7", 3, {"stagger": True}, 7),
    "es-T5-K5-full": ("es", "T5", 5, {}, 2),  # full-episode ES
    "gpes-T8-K2-blocks2": ("gpes", "T8", 2, {"noise_every": 4}, 8),
    # blocks of 2 truncations cut by resets inside a truncation (and by one on a last step)
    "gpes-T7-K2-blocks2": ("gpes", "T7-reset", 2, {"noise_every": 4}, 7),
    "gpes-T7-K3-blocks2-stagger": ("gpes", "T7", 3, {"noise_every": 6, "stagger": True}, 7),
}


def keyed_check(case, reps=REPS, seed=0):
    name, sys_name, trunc_len, extra, num_truncations = KEYED[case]
    system = moments.keyed_lq(**SYSTEMS[sys_name])
    num = PARTICLES * (2 if extra.get("antithetic", True) is False else 1)
    reps = reps * (2 if extra.get("antithetic", True) is False else 1)
    est = estimators.make(name, system, trunc_len=trunc_len, sigma=0.3, num_particles=num, **extra)
    init_keys, est_keys = moments.window_keys(jax.random.key(seed), reps, num_truncations)
    samples = moments.sample_window_sums(est, THETA, init_keys, est_keys)
    kw = {k: v for k, v in extra.items() if k != "noise_every"}
    weights_of = None
    if name == "gpes":
        blocks = extra["noise_every"] // trunc_len if extra["noise_every"] < system.horizon else None
        weights_of = f"gpes/{blocks}"
    means, variances = moments.reference_moments(
        name,
        system,
        THETA,
        init_keys,
        est_keys,
        trunc_len=trunc_len,
        num_particles=num,
        weights_of=weights_of,
        **kw,
    )
    return moments.Check(samples, means, variances), system, init_keys, est_keys


@pytest.mark.parametrize("case", list(KEYED))
def test_unbiased_with_the_exact_variance_on_a_key_dependent_system(case):
    check, *_ = keyed_check(case)
    info = f"{case}: {check.summary()}"
    assert np.all(np.abs(check.z) < Z), info
    assert check.detectable_bias <= MAX_DETECTABLE_BIAS, info
    if check.variances is not None:
        assert abs(check.var_z) < Z, info
        assert check.detectable_excess_variance <= MAX_DETECTABLE_EXCESS, info


def test_the_window_mean_is_the_gradient_of_the_windows_loss():
    """The reference's mean for PES is jax.grad of the window's summed loss with the same keys
    (a check of tests/moments.py itself, independent of its weight sets)."""
    system = moments.keyed_lq(**SYSTEMS["T5-reset"])
    init_keys, est_keys = moments.window_keys(jax.random.key(1), 3, 5)
    means, _ = moments.reference_moments(
        "pes", system, THETA, init_keys, est_keys, trunc_len=4, num_particles=2
    )

    def window_loss(theta, init_key, keys):
        state = system.init(jax.random.split(init_key, 4)[0])
        t, total = jnp.zeros((), jnp.int32), 0.0
        for key in keys:
            data_key = jax.random.split(key)[1]
            state, t, losses, _ = systems.unroll(system, theta, state, t, data_key, 4)
            total = total + jnp.sum(losses)
        return total

    grad = jax.jit(jax.grad(window_loss))
    for r in range(3):
        exact = grad(THETA, init_keys[r], est_keys[r])
        np.testing.assert_allclose(means[r], np.asarray(exact), rtol=1e-10)


def test_truncated_es_is_unbiased_only_for_the_truncated_gradient():
    """Negative control with the same power: truncated ES (T=8, K=2) matches its own mean (each
    truncation's gradient with the state at its start fixed) and is rejected against the
    whole-window gradient along its own trajectories."""
    system = moments.keyed_lq(**SYSTEMS["T8"])
    est = estimators.make("es", system, trunc_len=2, sigma=0.3, num_particles=PARTICLES)
    init_keys, est_keys = moments.window_keys(jax.random.key(0), REPS, 8)
    samples = moments.sample_window_sums(est, THETA, init_keys, est_keys)
    kw = dict(trunc_len=2, num_particles=PARTICLES)
    own = moments.Check(samples, *moments.reference_moments("es", system, THETA, init_keys, est_keys, **kw))
    assert np.all(np.abs(own.z) < Z) and abs(own.var_z) < Z, own.summary()
    assert own.detectable_bias <= MAX_DETECTABLE_BIAS, own.summary()
    full, _ = moments.reference_moments("es", system, THETA, init_keys, est_keys, weights_of="pes", **kw)
    wrong = moments.Check(samples, full)
    assert np.max(np.abs(wrong.z)) > 10 * Z, wrong.summary()
    bias = np.linalg.norm(own.target - wrong.target) / np.linalg.norm(wrong.target)
    assert bias > 0.3, bias  # measured: 0.52


def test_uoro_is_unbiased_for_the_rtrl_gradient():
    est = estimators.make("uoro", LQ.system, trunc_len=5)
    samples = episode_sums(est, THETA, 2, 1, reps=12000)
    z, _ = z_scores(samples, exact_grad(LQ.system, THETA))
    assert np.all(np.abs(z) < Z), z
    assert detectable_bias(samples, exact_grad(LQ.system, THETA)) <= 0.05


# --- influence balancing: the paper's central claim as a test -----------------------------

IB = tasks.make("influence_balancing", horizon=40)
IB_THETA = jnp.float64(0.5)


def ib_exact():
    return float(exact_grad(IB.system, IB_THETA, trunc_len=1))


def test_pes_is_unbiased_on_influence_balancing():
    est = estimators.make("pes", IB.system, trunc_len=1, sigma=0.1, num_particles=10)
    samples = episode_sums(est, IB_THETA, 40, 1, reps=5000)
    z, mean = z_scores(samples, ib_exact())
    assert abs(z) < Z, (z, mean, ib_exact())
    assert detectable_bias(samples, ib_exact()) <= 0.05, detectable_bias(samples, ib_exact())


@pytest.mark.parametrize("name", ["es", "tbptt"])
def test_truncated_methods_fail_the_same_check(name):
    """Negative control: the check has power, and truncation bias is large here."""
    hp = dict(trunc_len=1, sigma=0.1, num_particles=10) if name == "es" else dict(trunc_len=1)
    est = estimators.make(name, IB.system, **hp)
    samples = episode_sums(est, IB_THETA, 40, 1, reps=2000 if name == "es" else 2)
    exact = ib_exact()
    mean = samples.mean()
    # Measured: truncated estimates average ~190 against an exact 2340 (a 92% bias).
    assert abs(mean - exact) > 0.5 * abs(exact)
    if name == "es":
        z, _ = z_scores(samples, exact)
        assert abs(z) > 20 * Z
