"""GPES-K (fresh noise every ``noise_every`` steps): its two ends are PES and NRES, a hand
loop of the definition across mid-truncation resets, unbiasedness, chunking, sharding, and
a mutation that must fail."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pes import estimators, systems, tasks
from pes.estimators import noise_reuse
from pes.estimators._common import sample_noise, split_key
from tests.helpers import two_device_result
from tests.test_unbiasedness import LQ, THETA, Z, detectable_bias, episode_sums, ib_exact, z_scores

ROOT = Path(__file__).resolve().parent.parent


def _same(a, b):
    """Equal up to float64 rounding: XLA may contract a multiply-add into an FMA in one
    program and not in the other, so the same arithmetic can differ in the last bit."""
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-13, atol=1e-15)


def _run(est, theta, num, seed=0):
    """(grads, states) of ``num`` consecutive estimates at a fixed theta."""
    key = jax.random.key(seed)
    state = est.init(key, theta)
    estimate = jax.jit(est.estimate)
    grads, states = [], []
    for i in range(num):
        grad, state, _ = estimate(jax.random.fold_in(key, i), theta, state)
        grads.append(np.asarray(grad))
        states.append(state)
    return grads, states


# (horizon, trunc_len, stagger): K | T in lockstep; K not dividing T (episode ends inside
# truncations, at every position over time); staggered pairs.
CASES = [(8, 2, False), (7, 3, False), (10, 3, True), (5, 1, True)]


@pytest.mark.parametrize("horizon, trunc_len, stagger", CASES)
def test_noise_every_trunc_len_is_pes(horizon, trunc_len, stagger):
    system = LQ.system._replace(horizon=horizon)
    kw = dict(trunc_len=trunc_len, sigma=0.3, num_particles=6, stagger=stagger)
    g_pes, s_pes = _run(estimators.make("pes", system, **kw), THETA, 12)
    g_gpes, s_gpes = _run(estimators.make("gpes", system, noise_every=trunc_len, **kw), THETA, 12)
    for a, b, sa, sb in zip(g_pes, g_gpes, s_pes, s_gpes):
        _same(a, b)  # same keys -> same numbers
        _same(sa.accum, sb.accum)
        _same(sa.inner, sb.inner)
        np.testing.assert_array_equal(np.asarray(sa.t), np.asarray(sb.t))
    # negative control: the numbers do depend on the keys
    assert not np.allclose(g_pes[0], _run(estimators.make("pes", system, **kw), THETA, 1, seed=1)[0][0])


@pytest.mark.parametrize("horizon, trunc_len, stagger", CASES)
@pytest.mark.parametrize("noise_every", ["horizon", "longer", None])
def test_noise_every_at_least_the_horizon_is_nres(horizon, trunc_len, stagger, noise_every):
    system = LQ.system._replace(horizon=horizon)
    every = {"horizon": horizon, "longer": 3 * horizon + 1, None: None}[noise_every]
    kw = dict(trunc_len=trunc_len, sigma=0.3, num_particles=6, stagger=stagger)
    g_nres, s_nres = _run(estimators.make("nres", system, **kw), THETA, 12)
    g_gpes, s_gpes = _run(estimators.make("gpes", system, noise_every=every, **kw), THETA, 12)
    for a, b, sa, sb in zip(g_nres, g_gpes, s_nres, s_gpes):
        _same(a, b)
        np.testing.assert_array_equal(np.asarray(sa.eps), np.asarray(sb.eps))
        _same(sa.inner, sb.inner)
        np.testing.assert_array_equal(np.asarray(sa.t), np.asarray(sb.t))


def _hand_loop(system, theta, sigma, trunc_len, noise_every, num, k0):
    """The definition step by step for one antithetic pair started at t = 0 (float64)."""
    m = noise_every // trunc_len
    s_plus = s_minus = system.init(jax.random.split(k0, 4)[0])
    t, accum, eps, age = 0, np.zeros(theta.shape), np.zeros(theta.shape), m
    grads, epss = [], []
    for i in range(num):
        noise_key, data_key = split_key(jax.random.fold_in(k0, i))
        fresh = np.asarray(sample_noise(noise_key, theta, 1, sigma))[0]
        if age >= m:  # the block was used in m truncations: a new one starts here
            eps, accum, age = fresh, accum + fresh, 0
        grad, ended_mid, ended_last = np.zeros(theta.shape), False, False
        for j, kp in enumerate(systems.step_keys(data_key, trunc_len)):
            s_plus, l_plus = system.step(theta + eps, s_plus, kp[0])
            s_minus, l_minus = system.step(theta - eps, s_minus, kp[0])
            grad += (float(l_plus) - float(l_minus)) * accum / (2 * sigma**2)
            t += 1
            if t == system.horizon:  # new episode: its first block is this truncation's draw
                t = 0
                s_plus = s_minus = system.init(kp[1])
                eps = accum = fresh
                ended_last = j == trunc_len - 1
                ended_mid = not ended_last
        if ended_last:  # the next episode starts with the next truncation's draw
            accum, age = np.zeros(theta.shape), m
        elif ended_mid:
            age = 1
        else:
            age += 1
        grads.append(grad)
        epss.append(eps)
    return grads, epss


@pytest.mark.parametrize("horizon, trunc_len, noise_every", [(7, 2, 4), (9, 2, 6), (8, 2, 4), (5, 1, 2)])
def test_gpes_matches_a_hand_loop_across_mid_truncation_resets(horizon, trunc_len, noise_every):
    """E.g. T=7, K=2, blocks of 2 truncations: episodes end inside truncations 3, 7, ... and
    at the last step of truncation 6; blocks restart there and count from there."""
    task = tasks.make("linear_quadratic", dim=2, horizon=horizon)
    system, theta, sigma = task.system, jnp.array([0.2, -0.1]), 0.1
    est = estimators.make(
        "gpes", system, trunc_len=trunc_len, sigma=sigma, num_particles=2, noise_every=noise_every
    )
    k0 = jax.random.key(3)
    num = 14
    expected, expected_eps = _hand_loop(system, theta, sigma, trunc_len, noise_every, num, k0)
    state = est.init(k0, theta)
    distinct = set()
    for i in range(num):
        grad, state, _ = est.estimate(jax.random.fold_in(k0, i), theta, state)
        np.testing.assert_allclose(np.asarray(grad), expected[i], rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(np.asarray(state.eps[0]), expected_eps[i])
        distinct.add(tuple(np.round(expected_eps[i], 12)))
    # Negative controls: the block changed several times, and it is not PES (a block per truncation).
    assert len(distinct) >= 3
    pes_grads, _ = _run(
        estimators.make("pes", system, trunc_len=trunc_len, sigma=sigma, num_particles=2), theta, num, seed=3
    )
    assert not np.allclose(np.array(pes_grads), np.array(expected))


def test_blocks_are_noise_every_steps_in_lockstep():
    """T=12, K=2, noise_every=4: new perturbations at truncations 0, 2, 4 of every episode,
    and the accumulator is their running sum within the episode."""
    system = LQ.system._replace(horizon=12)
    est = estimators.make("gpes", system, trunc_len=2, sigma=0.3, num_particles=4, noise_every=4)
    state0 = est.init(jax.random.key(0), THETA)
    _, states = _run(est, THETA, 13)
    ages = [int(state0.age[0])] + [int(s.age[0]) for s in states[:-1]]  # before truncation i
    assert [i for i in range(13) if ages[i] >= 2] == [0, 2, 4, 6, 8, 10, 12], ages
    eps = [np.asarray(s.eps) for s in states]
    np.testing.assert_allclose(np.asarray(states[1].accum), eps[0])
    np.testing.assert_allclose(np.asarray(states[3].accum), eps[0] + eps[2])
    np.testing.assert_allclose(np.asarray(states[4].accum), eps[0] + eps[2] + eps[4])
    # the episode ended on truncation 5's last step
    np.testing.assert_array_equal(np.asarray(states[5].accum), 0.0)
    np.testing.assert_allclose(np.asarray(states[6].accum), eps[6])


# Unbiasedness and the exact variance of GPES on a key-dependent system (T a multiple of K,
# blocks cut by resets inside truncations, staggered pairs), with 5 % power:
# tests/test_unbiasedness.py (KEYED, gpes-*).


def test_gpes_is_unbiased_on_influence_balancing():
    """Where truncated ES is >90 % biased (tests/test_unbiasedness.py)."""
    ib = tasks.make("influence_balancing", horizon=40)
    est = estimators.make("gpes", ib.system, trunc_len=1, sigma=0.1, num_particles=10, noise_every=4)
    samples = episode_sums(est, jnp.float64(0.5), 40, 1, reps=8000)
    z, mean = z_scores(samples, ib_exact())
    assert abs(z) < Z, (z, mean, ib_exact())
    assert detectable_bias(samples, ib_exact()) <= 0.05, detectable_bias(samples, ib_exact())


def _block_only_update(out, fresh, prev_accum, run, scale, like):
    """A plausible bug: weight the losses by the current block's perturbation only (no
    accumulator), i.e. truncated ES over noise blocks."""
    from pes.estimators import _common

    _, accum, eps = _REAL_UPDATE(out, fresh, prev_accum, run, scale, like)
    grad = _common.combine2(out.before, run.eps, out.total - out.before, fresh, scale, like)
    return grad, accum, eps


_REAL_UPDATE = noise_reuse.block_update


def test_mutation_without_accumulator_fails_the_unbiasedness_check(monkeypatch):
    monkeypatch.setattr(noise_reuse, "block_update", _block_only_update)
    ib = tasks.make("influence_balancing", horizon=40)
    est = estimators.make("gpes", ib.system, trunc_len=1, sigma=0.1, num_particles=10, noise_every=4)
    samples = episode_sums(est, jnp.float64(0.5), 40, 1, reps=2000)
    z, mean = z_scores(samples, ib_exact())
    assert abs(z) > 4 * Z, (z, mean, ib_exact())  # the check above would catch it


def test_gpes_chunked_equals_unchunked():
    system = LQ.system._replace(horizon=7)
    kw = dict(trunc_len=3, sigma=0.1, num_particles=8, noise_every=6, stagger=True)
    g_a, s_a = _run(estimators.make("gpes", system, **kw), THETA, 6)
    g_b, s_b = _run(estimators.make("gpes", system, particle_chunk_size=4, **kw), THETA, 6)
    for a, b in zip(g_a, g_b):
        np.testing.assert_array_equal(a, b)
    for x, y in zip(jax.tree.leaves(s_a[-1]), jax.tree.leaves(s_b[-1])):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_gpes_options_and_errors():
    system = LQ.system
    for bad in (0, 3, -2, 2.0, True, "4"):
        with pytest.raises(ValueError, match="noise_every"):
            estimators.make("gpes", system, trunc_len=2, sigma=0.1, num_particles=4, noise_every=bad)
    with pytest.raises(ValueError, match="noise_every=5 is invalid with trunc_len=2"):
        estimators.make(
            "gpes", system._replace(horizon=None), trunc_len=2, sigma=0.1, num_particles=4, noise_every=5
        )
    with pytest.raises(ValueError, match="stagger"):
        estimators.make(
            "gpes",
            system._replace(horizon=None),
            trunc_len=2,
            sigma=0.1,
            num_particles=4,
            noise_every=4,
            stagger=True,
        )
    with pytest.raises(ValueError, match="sigma"):
        estimators.make("gpes", system, trunc_len=2, sigma=-1.0, num_particles=4, noise_every=4)
    with pytest.raises(ValueError, match="particle_chunk_size"):
        estimators.make(
            "gpes", system, trunc_len=2, sigma=0.1, num_particles=8, noise_every=4, particle_chunk_size=3
        )
    # noise_every >= T (not a multiple of K) is accepted: one block per episode.
    est = estimators.make("gpes", system, trunc_len=3, sigma=0.1, num_particles=4, noise_every=11)
    assert est.hparams["noise_every"] == 11 and est.steps_per_estimate == 3
    assert est.cost_per_estimate == 12


_TWO_DEVICE_SCRIPT = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import pes
from pes import sharding, tasks
assert len(jax.devices()) == 2, jax.devices()
system = tasks.make("linear_quadratic", dim=3, horizon=7).system
theta = jnp.array([0.1, -0.2, 0.3])
out = {}
for name, kw in {
    "blocks": dict(trunc_len=2, sigma=0.1, num_particles=8, noise_every=4, stagger=True),
    "episode": dict(trunc_len=3, sigma=0.1, num_particles=8, noise_every=None),
    "chunked": dict(trunc_len=2, sigma=0.1, num_particles=8, noise_every=4, particle_chunk_size=4),
}.items():
    runs = []
    for devices in (None, 2):
        est = pes.make("gpes", system, devices=devices, **kw)
        state = est.init(jax.random.key(0), theta)
        grads = []
        for i in range(5):
            g, state, _ = jax.jit(est.estimate)(jax.random.key(10 + i), theta, state)
            grads.append(np.asarray(g))
        runs.append((grads, state, est))
    (g1, s1, _), (g2, s2, est) = runs
    text = jax.jit(est.estimate).lower(jax.random.key(0), theta, s2).compile().as_text()
    out[name] = dict(
        grad_rel=max(float(np.max(np.abs(a - b)) / np.max(np.abs(a))) for a, b in zip(g1, g2)),
        state_equal=all(np.array_equal(np.asarray(a), np.asarray(b))
                        for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s2))),
        sharded=all(len(x.sharding.device_set) == 2 for x in jax.tree.leaves(s2)),
        collectives=sorted({op for op, _ in sharding.collectives(text)}),
    )
print("RESULT" + json.dumps(out))
"""


@pytest.mark.integration
def test_gpes_two_devices_match_one_device(tmp_path):
    for case, r in two_device_result(tmp_path, _TWO_DEVICE_SCRIPT, timeout=300).items():
        assert r["state_equal"], case  # states, counters, accumulators, blocks: bit for bit
        assert r["sharded"], case
        assert r["grad_rel"] < 1e-13, (case, r)  # only the order of the cross-device sum differs
        assert r["collectives"] == ["all-reduce"], (case, r)
