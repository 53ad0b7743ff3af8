"""`pes.check_unbiased` on a user-style problem that is none of the suite's tasks.

The problem: a leaky integrator fitted to a teacher, h <- (1 - a) h + a w x_t with a noisy input
x_t, loss (h - y_t)^2, theta = (logit a, w).  Its state carries theta's effect across truncations,
so estimators that cut the graph at truncation boundaries (truncated ES, TBPTT with K < T) are
biased, and PES is not.  The checks' verdicts, not only their numbers, are asserted: the
helper must flag the biased estimators and must not flag correct ones (over several seeds, at
its stated false-alarm rate), and its statistical core is checked for calibration and power on
synthetic samples with a known mean.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pes
from pes.diagnostics import t_quantile, zero_mean_test

HORIZON = 40
A_TEACHER, W_TEACHER = 0.1, 2.0


def leaky_integrator(noise: float = 0.1, horizon: int = HORIZON, inputs: int = 1) -> pes.UnrolledSystem:
    def init(key):
        return {"h": jnp.zeros(()), "y": jnp.zeros(()), "t": jnp.zeros((), jnp.int32)}

    def step(theta, s, key):
        x = jnp.sin(0.3 * s["t"] + jnp.arange(inputs)) + noise * jax.random.normal(key, (inputs,))
        a = jax.nn.sigmoid(theta["logit_a"])
        h = (1 - a) * s["h"] + a * jnp.sum(theta["w"] * x) / inputs
        y = (1 - A_TEACHER) * s["y"] + A_TEACHER * W_TEACHER * jnp.sum(x) / inputs
        return {"h": h, "y": y, "t": s["t"] + 1}, (h - y) ** 2

    return pes.UnrolledSystem(init, step, horizon=horizon)


THETA = {"logit_a": jnp.array(-1.0), "w": jnp.array([1.0])}
ES_HP = dict(trunc_len=4, sigma=0.01, num_particles=8)


def test_flags_truncated_es_and_tbptt_not_pes():
    system = leaky_integrator()
    key = jax.random.key(0)
    results = {
        "pes": pes.check_unbiased(system, "pes", THETA, key, **ES_HP),
        "es": pes.check_unbiased(system, "es", THETA, key, **ES_HP),
        "tbptt": pes.check_unbiased(system, "tbptt", THETA, key, trunc_len=4),
    }
    assert results["pes"].consistent, str(results["pes"])
    assert not results["es"].consistent, str(results["es"])
    assert not results["tbptt"].consistent, str(results["tbptt"])
    assert str(results["pes"]).startswith("pes: consistent with the exact gradient")
    assert str(results["tbptt"]).startswith("tbptt: biased by ")
    # the bias is large and resolved: far above the noise level of the measurement
    for name in ("es", "tbptt"):
        assert results[name].relative_bias > 0.2 > 5 * results[name].relative_noise, str(results[name])
    assert results["pes"].directions == "coordinates" and results["pes"].t.shape == (2,)


@pytest.mark.parametrize(
    "name,hparams",
    [
        ("pes", dict(ES_HP, stagger=True)),  # step-unlocked pairs
        ("pes", dict(ES_HP, trunc_len=7)),  # K does not divide T: 7 episodes per sample
        ("nres", ES_HP),
        ("rtrl", dict(trunc_len=4)),
        ("tbptt", dict(trunc_len=HORIZON)),  # TBPTT over the whole episode is exact
    ],
)
def test_correct_estimators_are_not_flagged_over_seeds(name, hparams):
    system = leaky_integrator()
    verdicts = [
        pes.check_unbiased(system, name, THETA, jax.random.key(seed), num_samples=128, **hparams)
        for seed in range(3)
    ]
    assert all(v.consistent for v in verdicts), "\n".join(map(str, verdicts))
    if hparams["trunc_len"] == 7:
        assert {v.episodes_per_sample for v in verdicts} == {7}


def test_against_full_episode_es():
    system = leaky_integrator()
    key = jax.random.key(3)
    ok = pes.check_unbiased(system, "pes", THETA, key, reference="es", **ES_HP)
    bad = pes.check_unbiased(system, "es", THETA, key, reference="es", **ES_HP)
    assert ok.consistent, str(ok)
    assert not bad.consistent, str(bad)
    assert "full-episode ES" in str(ok) and "full-episode ES" in str(bad)


def test_large_theta_is_tested_along_fixed_directions():
    inputs = 24  # 25 parameters > max_directions = 16
    system = leaky_integrator(inputs=inputs)
    theta = {"logit_a": jnp.array(-1.0), "w": jnp.linspace(0.5, 1.5, inputs)}
    key = jax.random.key(4)
    ok = pes.check_unbiased(system, "pes", theta, key, **ES_HP)
    bad = pes.check_unbiased(system, "tbptt", theta, key, trunc_len=4)
    assert ok.directions == bad.directions == "projections" and ok.t.shape == (16,)
    assert ok.consistent, str(ok)
    assert not bad.consistent, str(bad)
    # the first direction is the gradient's: TBPTT's bias shows there
    assert abs(bad.t[0]) > bad.threshold, str(bad)


def test_exact_estimator_is_not_flagged_for_float32_rounding():
    """A deterministic system in float32: the only difference from autodiff is round-off."""
    system = leaky_integrator(noise=0.0)
    theta = jax.tree.map(lambda x: x.astype(jnp.float32), THETA)
    key = jax.random.key(5)
    exact = pes.check_unbiased(system, "tbptt", theta, key, num_samples=16, trunc_len=HORIZON)
    cut = pes.check_unbiased(system, "tbptt", theta, key, num_samples=16, trunc_len=4)
    assert exact.consistent, str(exact)
    assert not cut.consistent, str(cut)


def test_student_t_quantiles():
    assert t_quantile(0.975, 10) == pytest.approx(2.2281, abs=1e-4)
    assert t_quantile(0.995, 127) == pytest.approx(2.6150, abs=1e-3)


@pytest.mark.parametrize("dist", ["normal", "es_like"])
def test_zero_mean_test_false_alarm_rate_and_power(dist):
    """Calibration on samples with a known mean: at most alpha false alarms; a 6-SE bias is found."""
    rng = np.random.default_rng(0)
    trials, n, d, alpha = 4000, 64, 3, 0.05

    def draw():
        if dist == "normal":
            return rng.standard_normal((trials, n, d))
        # products of Gaussians (an antithetic ES estimate's shape): heavy-tailed, mean 0
        return rng.standard_normal((trials, n, d)) * rng.standard_normal((trials, n, 1))

    def rejects(s):
        _, _, t, threshold = zero_mean_test(s, alpha=alpha)
        return np.max(np.abs(t)) > threshold

    alarms = np.mean([rejects(s) for s in draw()])
    assert alarms <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / trials), alarms
    shifted = draw()
    shifted[:, :, 1] += 6.0 / np.sqrt(n)  # a bias of 6 standard errors in one coordinate
    found = np.mean([rejects(s) for s in shifted])
    assert found >= 0.95, found


def test_bad_inputs_fail_before_compute():
    system = leaky_integrator()
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="horizon=None"):
        pes.check_unbiased(system._replace(horizon=None), "pes", THETA, key, **ES_HP)
    with pytest.raises(ValueError, match="reference='grad' is invalid"):
        pes.check_unbiased(system, "pes", THETA, key, reference="grad", **ES_HP)
    with pytest.raises(ValueError, match="alpha=1.5 is invalid"):
        pes.check_unbiased(system, "pes", THETA, key, alpha=1.5, **ES_HP)
    with pytest.raises(ValueError, match="num_samples=2 is invalid"):
        pes.check_unbiased(system, "pes", THETA, key, num_samples=2, **ES_HP)
    with pytest.raises(ValueError, match="already built"):
        pes.check_unbiased(system, pes.make("tbptt", system, trunc_len=4), THETA, key, trunc_len=4)
    with pytest.raises(ValueError, match="needs es_sigma and es_particles"):
        pes.check_unbiased(system, "tbptt", THETA, key, reference="es", trunc_len=4)
    with pytest.raises(ValueError, match="estimator='foo' is unknown"):
        pes.check_unbiased(system, "foo", THETA, key)
