"""Non-finite gradient estimates in the outer loop (``nonfinite=`` / ``train.nonfinite``).

A toy estimator returns a NaN (or infinite) estimate at chosen steps and a finite one
otherwise; the outer loop must skip it or apply it as zero, count it per log interval, and
leave every number of a run without non-finite estimates as it was.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import config as CFG
from experiments import runner
from pes import outer
from pes.estimators import GradientEstimator

BAD_STEPS = (1, 2, 5)  # outer steps (0-based) whose estimate is non-finite


def toy_estimator(bad=BAD_STEPS, value=jnp.nan):
    """grad = theta - 1 (+ a NaN/inf entry at the ``bad`` steps); the state counts estimates."""

    def init(key, theta):
        del key, theta
        return jnp.zeros((), jnp.int32)

    def estimate(key, theta, count):
        del key
        poison = jnp.isin(count, jnp.array(bad))
        grad = jax.tree.map(lambda x: x - 1.0, theta)
        grad = {"a": jnp.where(poison, grad["a"].at[0].set(value), grad["a"]), "b": grad["b"]}
        loss = jnp.where(poison, jnp.nan, jnp.sum(theta["a"]))
        return grad, count + 1, {"loss": loss}

    return GradientEstimator(init, estimate, "toy", {}, 1, 1)


THETA = {"a": jnp.array([0.5, -0.5]), "b": jnp.array(2.0)}


def manual(optimizer, steps, mode):
    """The reference: a plain loop applying the finite estimates (skip) or zeros (zero)."""
    est = toy_estimator()
    theta, opt_state, count = THETA, optimizer.init(THETA), jnp.zeros((), jnp.int32)
    for _ in range(steps):
        grad, count, _ = est.estimate(None, theta, count)
        bad = not all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grad))
        if bad and mode == "skip":
            continue
        if bad:
            grad = jax.tree.map(jnp.zeros_like, grad)
        updates, opt_state = optimizer.update(grad, opt_state, theta)
        theta = optax.apply_updates(theta, updates)
    return theta


@pytest.mark.parametrize("mode", ["skip", "zero"])
@pytest.mark.parametrize("value", [jnp.nan, jnp.inf])
def test_nonfinite_estimates_are_skipped_or_zeroed_and_counted(mode, value):
    opt = optax.adam(0.1)
    est = toy_estimator(value=value)
    state, metrics = outer.run(jax.random.key(0), THETA, est, opt, num_steps=8, log_every=2, nonfinite=mode)
    want = manual(opt, 8, mode)
    for got, ref in zip(jax.tree.leaves(state.theta), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-6)
        assert np.all(np.isfinite(np.asarray(got)))
    np.testing.assert_array_equal(np.asarray(metrics["nonfinite_estimates"]), [1, 1, 1, 0])
    assert np.all(np.isfinite(np.asarray(metrics["loss"])))  # the finite estimates' mean
    assert int(state.est_state) == 8  # the estimator advanced at every step


def test_skip_and_zero_differ_with_a_stateful_optimizer():
    """Zeroing still moves Adam's moments (theta moves by momentum); skipping does not."""
    opt = optax.adam(0.1)
    est = toy_estimator()
    skip, _ = outer.run(jax.random.key(0), THETA, est, opt, num_steps=4, nonfinite="skip")
    zero, _ = outer.run(jax.random.key(0), THETA, est, opt, num_steps=4, nonfinite="zero")
    assert not np.allclose(np.asarray(skip.theta["a"]), np.asarray(zero.theta["a"]))


def test_without_the_option_a_nonfinite_estimate_is_applied():
    state, metrics = outer.run(jax.random.key(0), THETA, toy_estimator(), optax.sgd(0.1), num_steps=4)
    assert np.isnan(np.asarray(state.theta["a"][0]))
    assert "nonfinite_estimates" not in metrics


def test_an_interval_with_only_nonfinite_estimates_logs_nan_and_is_not_a_divergence():
    est = toy_estimator(bad=(2, 3))
    _, metrics = outer.run(
        jax.random.key(0), THETA, est, optax.sgd(0.1), num_steps=6, log_every=2, nonfinite="skip"
    )
    metrics = jax.device_get(metrics)
    assert np.isnan(metrics["loss"][1]) and np.isnan(metrics["grad_norm"][1])
    np.testing.assert_array_equal(metrics["nonfinite_estimates"], [0, 2, 0])
    assert runner.divergence(metrics) is None
    metrics["theta/0"] = np.array([0.1, np.nan, 0.2])  # theta itself non-finite: a divergence
    assert runner.divergence(metrics)[1] == "theta/0"
    plain = {k: v for k, v in metrics.items() if k != "nonfinite_estimates"}
    assert runner.divergence(plain) is not None  # without the count a NaN loss still is one


def test_config_validation_is_one_line():
    cfg = CFG.compose(["task=linear_quadratic", "estimator=pes", "train.nonfinite=drop"])
    allowed = r"train.nonfinite='drop' is invalid; allowed: null, skip, zero"
    with pytest.raises(CFG.ConfigError, match=allowed):
        CFG.build(cfg)
    cfg = CFG.compose(["task=linear_quadratic", "estimator=pes", "+estimator.horizon_schedule.kind=weird"])
    with pytest.raises(CFG.ConfigError, match=r"estimator.horizon_schedule=.* is invalid; allowed"):
        CFG.build(cfg)
    cfg = CFG.compose(["task=linear_quadratic", "estimator=pes", "train.nonfinite=skip"])
    assert CFG.build(cfg).nonfinite == "skip"


def test_default_keys_keep_run_identities():
    """The new keys at their null defaults leave every existing run's fingerprint unchanged."""
    cfg = CFG.compose(["task=linear_quadratic", "estimator=pes"])
    data = CFG.result_config(cfg)
    assert "nonfinite" not in data["train"] and "horizon_schedule" not in data["estimator"]
    sched = CFG.compose(
        ["task=linear_quadratic", "estimator=pes", "+estimator.horizon_schedule={kind: constant, length: 50}"]
    )
    assert CFG.fingerprint(sched) != CFG.fingerprint(cfg)
