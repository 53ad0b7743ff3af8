"""The per-truncation variance protocol (pes.variance.truncation_*) against closed forms.

For a memoryless linear loss l_t = c . theta the per-truncation estimate of one antithetic
pair whose current perturbation eps is preceded by u earlier perturbations of the episode
is g = K (c . eps) xi / sigma^2 with xi = eps + (the u earlier ones), so

    E g = K c,   E||g - K c||^2 = K^2 ||c||^2 (P + 1 + u P).

PES has u = (truncations so far in the episode), NRES u = 0, GPES with blocks of m
truncations u = floor(truncation index / m).  With G independent pairs the relative
variance (normalised by ||K c||^2) is the mean over the episode's phases of (P + 1 + u P) / G.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pes import systems, tasks, variance
from tests.test_unbiasedness import exact_grad

P, T, G = 3, 8, 2
C_VEC = jnp.array([1.0, -2.0, 0.5])


def _static_system(horizon=T):
    def init(key):
        del key
        return jnp.zeros(())

    def step(theta, state, key):
        del key
        return state, jnp.dot(C_VEC, theta)

    return systems.UnrolledSystem(init, step, horizon, "sum")


def _closed_form(name, noise_every):
    u = np.arange(T)  # K = 1: one truncation per step
    hist = {"pes": u, "nres": 0 * u, "gpes": u // max(1, noise_every or T)}[name]
    return float(np.mean(P + 1 + hist * P) / G)


@pytest.mark.parametrize("stagger", [False, True])
@pytest.mark.parametrize("name, noise_every", [("pes", None), ("nres", None), ("gpes", 4)])
def test_variance_matches_the_closed_form(name, noise_every, stagger):
    system = _static_system()
    theta = jnp.array([0.3, 0.1, -0.2])
    hp = dict(trunc_len=1, sigma=0.5, num_particles=2 * G, stagger=stagger)
    if name == "gpes":
        hp["noise_every"] = noise_every
    ests = variance.truncation_estimates(
        system, theta, jax.random.key(0), estimator=name, num_chains=200, warmup=T, num_estimates=4 * T, **hp
    )
    assert jax.tree.leaves(ests)[0].shape == (200, 4 * T, P)
    stats = variance.truncation_statistics(ests, exact_grad(system, theta), 1 / T)
    expected = _closed_form(name, noise_every)
    assert abs(stats["variance"] - expected) < 5 * stats["variance_se"], (stats, expected)
    assert stats["bias2"] < 0.02  # the long-run mean is K c
    assert abs(stats["mse"] - expected) < 5 * stats["mse_se"] + 0.02


def test_nres_below_gpes_below_pes_on_the_static_loss():
    """The ordering the closed form gives: 2 < 2.75 < 7.25 (negative control for power)."""
    assert _closed_form("nres", None) < _closed_form("gpes", 4) < _closed_form("pes", None)


def test_truncated_es_is_biased_where_pes_is_not():
    """Linear-quadratic system with memory: truncated ES's long-run mean misses the
    whole-episode gradient (large bias2), PES's does not."""
    lq = tasks.make("linear_quadratic", dim=3, decay=0.9, horizon=8)
    theta = jnp.array([0.3, -0.2, 0.5])
    ref = exact_grad(lq.system, theta)
    out = {}
    for name in ("pes", "es"):
        ests = variance.truncation_estimates(
            lq.system,
            theta,
            jax.random.key(1),
            estimator=name,
            num_chains=100,
            warmup=4,
            num_estimates=16,
            trunc_len=2,
            sigma=0.3,
            num_particles=4,
            stagger=True,
        )
        out[name] = variance.truncation_statistics(ests, ref, 2 / 8)
    assert out["pes"]["bias2"] < 0.01, out
    assert out["es"]["bias2"] > 0.1, out


def test_protocol_errors():
    system = _static_system()
    with pytest.raises(ValueError, match="num_chains=0"):
        variance.truncation_estimates(
            system,
            C_VEC,
            jax.random.key(0),
            estimator="pes",
            num_chains=0,
            warmup=0,
            num_estimates=1,
            trunc_len=1,
            sigma=0.1,
            num_particles=2,
        )
    with pytest.raises(ValueError, match="reference gradient is zero"):
        variance.truncation_statistics(jnp.ones((2, 2, 3)), jnp.zeros(3), 0.5)
