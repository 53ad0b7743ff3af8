"""Per-episode horizons drawn from a schedule (`pes.horizons`, ``horizon_schedule=``).

* Exact equivalence: a constant schedule is the fixed horizon, and the drawn-horizon machinery
  with a schedule that can only draw T gives, bit for bit, the numbers of the fixed horizon T
  (every ES-family estimator, lockstep and staggered, K dividing T or not, chunked).
* Key discipline: each noise group draws its own lengths, ``sample(fold_in(key, group))``, so
  groups started in lockstep drift apart and stay apart.
* Unbiasedness: on a deterministic linear-quadratic system the expected objective over a window
  of J steps, E over the drawn lengths of the window's loss, has an exact gradient (a renewal
  recursion over each group's place in its episode).  PES and NRES, summed over the window's
  truncations with theta fixed, match it within Z standard errors with at most 5 % detectable
  bias; truncated ES, the negative control, is rejected by a wide margin.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pes import estimators, horizons, systems, tasks
from pes.estimators import particles
from tests import moments

pytestmark = pytest.mark.numerics

Z = 5.0
THETA = jnp.array([0.3, -0.5])


def _sequence(est, theta, num):
    """(grads, states) of ``num`` estimates with theta fixed."""
    key = jax.random.key(0)
    state = est.init(key, theta)
    estimate = jax.jit(est.estimate)
    grads, states = [], []
    for i in range(num):
        grad, state, _ = estimate(jax.random.fold_in(key, i), theta, state)
        grads.append(grad)
        states.append(state)
    return grads, states


def _counters(state):
    return state.t.t if isinstance(state.t, particles.Clock) else state.t


def _assert_same_run(fixed, drawn):
    """Gradients and every state leaf bitwise equal (the drawn clock's counters for ``t``)."""
    (g1, s1), (g2, s2) = fixed, drawn
    for a, b in zip(g1, g2):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(s1, s2):
        np.testing.assert_array_equal(np.asarray(a.t), np.asarray(_counters(b)))
        for x, y in zip(jax.tree.leaves(a._replace(t=None)), jax.tree.leaves(b._replace(t=None))):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


CASES = {
    "pes-K-divides-T": ("pes", 8, dict(trunc_len=2)),
    "pes-K-not-dividing-T": ("pes", 7, dict(trunc_len=3)),
    "pes-stagger-chunked": ("pes", 7, dict(trunc_len=3, stagger=True, particle_chunk_size=4)),
    "pes-single": ("pes", 5, dict(trunc_len=2, antithetic=False, num_particles=5)),
    "es": ("es", 7, dict(trunc_len=3)),
    "es-stagger": ("es", 7, dict(trunc_len=3, stagger=True)),
    "nres-stagger": ("nres", 7, dict(trunc_len=3, stagger=True)),
    "gpes-blocks-stagger": ("gpes", 7, dict(trunc_len=2, noise_every=4, stagger=True)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_schedule_that_draws_only_T_is_the_fixed_horizon_bit_for_bit(case):
    name, horizon, hp = CASES[case]
    hp = dict(dict(sigma=0.2, num_particles=8), **hp)
    lq = tasks.make("linear_quadratic", dim=2, decay=0.8, horizon=horizon).system
    keyed = moments.keyed_lq(dim=2, horizon=horizon)  # data noise and initial states from the keys
    for system in (lq, keyed):
        fixed = _sequence(estimators.make(name, system, **hp), THETA, 6)
        degenerate = horizons.LogUniform(horizon, horizon + 1)
        drawn_est = estimators.make(name, system._replace(horizon=None), horizon_schedule=degenerate, **hp)
        drawn = _sequence(drawn_est, THETA, 6)
        assert isinstance(drawn[1][0].t, particles.Clock)  # the drawn machinery, not the fixed clock
        _assert_same_run(fixed, drawn)
        constant = estimators.make(
            name, system._replace(horizon=3), horizon_schedule=horizons.Constant(horizon), **hp
        )
        _assert_same_run(fixed, _sequence(constant, THETA, 6))


def test_never_ending_is_horizon_none():
    system = tasks.make("linear_quadratic", dim=2, horizon=6).system
    hp = dict(trunc_len=3, sigma=0.2, num_particles=4)
    plain = _sequence(estimators.make("pes", system._replace(horizon=None), **hp), THETA, 4)
    never = _sequence(estimators.make("pes", system, horizon_schedule=horizons.NeverEnding(), **hp), THETA, 4)
    _assert_same_run(plain, never)


def test_log_uniform_samples_its_documented_distribution():
    schedule = horizons.LogUniform(3, 40)
    draws = np.asarray(jax.vmap(schedule.sample)(jax.random.split(jax.random.key(0), 40000)))
    lengths, probs = schedule.probabilities()
    assert draws.min() >= 3 and draws.max() <= 39
    counts = np.array([(draws == n).sum() for n in lengths])
    se = np.sqrt(len(draws) * probs * (1 - probs))
    assert np.all(np.abs(counts - len(draws) * probs) < Z * se)
    assert probs.sum() == pytest.approx(1.0)


def test_groups_draw_their_own_horizons_and_stay_step_unlocked():
    """Lockstep start, K = 1: after resets the groups' counters differ (each draws its own
    length), and every new length is ``sample(fold_in(reset key, group))``."""
    schedule = horizons.LogUniform(2, 9)
    system = tasks.make("linear_quadratic", dim=2, horizon=None).system
    est = estimators.make("pes", system, trunc_len=1, sigma=0.1, num_particles=16, horizon_schedule=schedule)
    key = jax.random.key(3)
    state = est.init(key, THETA)
    groups = jnp.arange(8)
    first = jax.vmap(lambda g: schedule.sample(jax.random.fold_in(jax.random.fold_in(key, 1), g)))(groups)
    np.testing.assert_array_equal(np.asarray(state.t.length), np.asarray(first))
    estimate = jax.jit(est.estimate)
    unlocked = 0
    for i in range(30):
        step_key = jax.random.fold_in(key, i)
        _, new, _ = estimate(step_key, THETA, state)
        ended = np.asarray(new.t.t) == 0
        reset_key = jax.random.split(jax.random.split(step_key)[1], (1, 2))[0, 1]
        drawn = jax.vmap(lambda g, k=reset_key: schedule.sample(jax.random.fold_in(k, g)))(groups)
        np.testing.assert_array_equal(np.asarray(new.t.length)[ended], np.asarray(drawn)[ended])
        np.testing.assert_array_equal(np.asarray(new.t.length)[~ended], np.asarray(state.t.length)[~ended])
        unlocked += len(set(np.asarray(new.t.t).tolist())) > 1
        state = new
    assert unlocked >= 25  # out of step almost always (lockstep only at the very start)


# --- unbiasedness for the expected objective -----------------------------------------------

SCHEDULE = horizons.LogUniform(2, 12)  # lengths 2..11
DECAY = 0.8
K, TRUNCATIONS, PARTICLES, REPS = 2, 12, 16, 3000


def expected_window_gradient(schedule, theta, decay, window, stagger):
    """d/dtheta of E[sum of the J = ``window`` step losses] of one group (exact).

    The system is deterministic from a fixed initial state, so the loss of a step depends only
    on the step's age a in its episode: l_a(theta).  The distribution of (age, length) evolves
    by the renewal rule (age + 1; at age = length - 1 the episode ends and a new length is
    drawn), starting from age 0 (lockstep) or, staggered, from a uniform age in the first
    episode.  The target is sum_s sum_a P(age_s = a) grad l_a.
    """
    lengths, probs = schedule.probabilities()
    longest = int(lengths[-1])
    lq = tasks.make("linear_quadratic", dim=theta.shape[0], decay=decay, horizon=None).system

    def losses(th):
        _, _, out, _ = systems.unroll(
            lq, th, lq.init(None), jnp.zeros((), jnp.int32), jax.random.key(0), longest
        )
        return out

    grads = np.asarray(jax.jacrev(losses)(theta))  # (longest, P): grad l_a
    dist = np.zeros((longest, len(lengths)))  # P(age = a, length = lengths[i])
    for i, length in enumerate(lengths):
        if stagger:
            dist[:length, i] = probs[i] / length
        else:
            dist[0, i] = probs[i]
    total = np.zeros(theta.shape[0])
    for _ in range(window):
        total += dist.sum(axis=1) @ grads
        new = np.zeros_like(dist)
        for i, length in enumerate(lengths):
            new[1:length, i] = dist[: length - 1, i]
            new[0, :] += dist[length - 1, i] * probs
        dist = new
    return total


def _window_sums(name, stagger, reps=REPS):
    system = tasks.make("linear_quadratic", dim=2, decay=DECAY, horizon=None).system
    est = estimators.make(
        name,
        system,
        trunc_len=K,
        sigma=0.3,
        num_particles=PARTICLES,
        stagger=stagger,
        horizon_schedule=SCHEDULE,
    )
    init_keys, est_keys = moments.window_keys(jax.random.key(11), reps, TRUNCATIONS)
    return moments.sample_window_sums(est, THETA, init_keys, est_keys)


def _check(samples, target):
    mean = samples.mean(axis=0)
    se = samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0])
    z = (mean - target) / se
    detectable = (Z + moments.Z_POWER) * float(np.max(se)) / float(np.linalg.norm(target))
    return z, detectable


@pytest.mark.parametrize("name,stagger", [("pes", False), ("nres", False), ("pes", True)])
def test_unbiased_for_the_expected_objective(name, stagger):
    target = expected_window_gradient(SCHEDULE, THETA, DECAY, K * TRUNCATIONS, stagger)
    z, detectable = _check(_window_sums(name, stagger), target)
    assert np.all(np.abs(z) < Z), (z, target)
    assert detectable <= 0.05, detectable


def test_truncated_es_is_biased_for_the_expected_objective():
    """Negative control with the same power: truncated ES ignores theta's effect through earlier
    truncations and is rejected."""
    target = expected_window_gradient(SCHEDULE, THETA, DECAY, K * TRUNCATIONS, False)
    samples = _window_sums("es", False)
    z, detectable = _check(samples, target)
    assert detectable <= 0.05, detectable
    assert np.max(np.abs(z)) > 10 * Z, z
    bias = np.linalg.norm(samples.mean(axis=0) - target) / np.linalg.norm(target)
    assert bias > 0.3, bias


def test_schedule_errors_are_one_line():
    system = tasks.make("linear_quadratic", dim=2, horizon=None).system
    hp = dict(trunc_len=2, sigma=0.1, num_particles=4)
    for bad in (horizons.LogUniform(5, 5), horizons.LogUniform(0, 3), horizons.Constant(0), 7, "log"):
        with pytest.raises(ValueError, match="horizon_schedule=.* is invalid; allowed") as err:
            estimators.make("pes", system, horizon_schedule=bad, **hp)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="stagger=True is invalid"):
        estimators.make("nres", system, horizon_schedule=horizons.NeverEnding(), stagger=True, **hp)
    ib = tasks.make("influence_balancing").system  # unroll_loss="last"
    with pytest.raises(ValueError, match="unroll_loss='last'"):
        estimators.make(
            "pes", ib, horizon_schedule=horizons.LogUniform(2, 5), trunc_len=1, sigma=0.1, num_particles=4
        )
    for name in ("pes_a", "tbptt", "ars"):
        assert "horizon_schedule" not in estimators.hparam_names(name)
    with pytest.raises(ValueError, match="horizon_schedule"):
        horizons.from_config({"kind": "log_uniform", "min_length": 3})
    assert horizons.from_config(
        {"kind": "log_uniform", "min_length": 3, "max_length": 9}
    ) == horizons.LogUniform(3, 9)
