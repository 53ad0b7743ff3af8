"""pes.hyperopt: schedules and inner optimizers against hand-computed values, the training
system step by step, and a non-differentiable meta-objective with ES/PES (closed form)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pes
from pes import hyperopt
from pes.systems import full_objective

pytestmark = pytest.mark.numerics  # exact equivalences: rerun by `make test-portable`

LN = math.log


# ----------------------------------------------------------------------------- schedules


@pytest.mark.parametrize(
    "t, expected",
    [
        (0, 0.1),
        (25, 0.1 * 0.75 + 0.01 * 0.25),
        (50, 0.055),
        (99, 0.1 * 0.01 + 0.01 * 0.99),
        (100, 0.01),
    ],
)
def test_linear_schedule_hand_values(t, expected):
    theta = jnp.array([LN(0.1), LN(0.01)])
    assert float(hyperopt.schedule_value("linear", theta, t, 100)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("t, expected", [(0, 0.5), (5, 0.5 / 1.5**2), (10, 0.5 / 2.0**2), (20, 0.5 / 9.0)])
def test_inverse_time_decay_hand_values(t, expected):
    theta = jnp.array([LN(0.5), LN(2.0)])  # initial LR 0.5, decay exponent 2
    assert float(hyperopt.schedule_value("inverse-time-decay", theta, t, 10)) == pytest.approx(
        expected, rel=1e-12
    )


def test_fixed_schedule_ignores_step():
    theta = jnp.array([LN(0.3)])
    values = [float(hyperopt.schedule_value("fixed", theta, t, 7)) for t in (0, 3, 7)]
    assert values == pytest.approx([0.3] * 3, rel=1e-12)


def test_per_tensor_schedule_gives_one_lr_per_tensor():
    tree = {"w": jnp.zeros((3, 2)), "b": jnp.zeros((2,))}
    theta = hyperopt.init_schedule_params("linear-pl", [LN(0.1), LN(0.01)], tree)
    theta = dict(theta, b=jnp.array([LN(0.2), LN(0.02)]))
    lr = hyperopt.schedule_value("linear-pl", theta, 50, 100)
    assert float(lr["w"]) == pytest.approx(0.055, rel=1e-12)
    assert float(lr["b"]) == pytest.approx(0.11, rel=1e-12)
    # per-tensor learning rates scale each tensor's step separately
    direction = {"w": jnp.ones((3, 2)), "b": jnp.ones((2,))}
    new = hyperopt.apply_lr(tree, direction, lr)
    np.testing.assert_allclose(new["w"], -0.055 * np.ones((3, 2)), rtol=1e-12)
    np.testing.assert_allclose(new["b"], -0.11 * np.ones(2), rtol=1e-12)


def test_bad_schedule_inputs_fail_with_clear_errors():
    with pytest.raises(
        ValueError,
        match=r"schedule='cosine' is unknown; allowed: fixed, inverse-time-decay, linear",
    ):
        hyperopt.schedule_value("cosine", jnp.zeros(2), 0, 10)
    with pytest.raises(ValueError, match=r"schedule 'linear' takes 2 parameters; got 1"):
        hyperopt.init_schedule_params("linear", [0.0])
    with pytest.raises(ValueError, match="needs the model's parameter tree"):
        hyperopt.init_schedule_params("fixed-pl", [0.0])
    with pytest.raises(ValueError, match="lr must be a scalar"):
        hyperopt.apply_lr({"w": jnp.zeros(2)}, {"w": jnp.zeros(2)}, jnp.zeros(2))


# ----------------------------------------------------------------------------- optimizers

P0 = jnp.array([1.0, -2.0])
G1 = jnp.array([0.5, 1.0])
G2 = jnp.array([-1.0, 2.0])


def _two_directions(opt):
    state = opt.init(P0)
    d1, state = opt.update(G1, state, P0)
    d2, state = opt.update(G2, state, P0)
    return np.asarray(d1), np.asarray(d2)


def test_sgd_direction_is_the_gradient():
    d1, d2 = _two_directions(hyperopt.inner_optimizer("sgd"))
    np.testing.assert_array_equal(d1, G1)
    np.testing.assert_array_equal(d2, G2)


def test_sgdm_is_pytorch_style_momentum():
    d1, d2 = _two_directions(hyperopt.inner_optimizer("sgdm", momentum=0.9))
    np.testing.assert_allclose(d1, [0.5, 1.0], rtol=1e-12)  # buf = g1 (no dampening)
    np.testing.assert_allclose(d2, [0.9 * 0.5 - 1.0, 0.9 * 1.0 + 2.0], rtol=1e-12)  # 0.9 buf + g2


def test_adam_direction_hand_computed():
    b1, b2, eps = 0.9, 0.999, 1e-8
    d1, d2 = _two_directions(hyperopt.inner_optimizer("adam", b1=b1, b2=b2, eps=eps))
    g1, g2 = np.asarray(G1), np.asarray(G2)
    np.testing.assert_allclose(d1, g1 / (np.abs(g1) + eps), rtol=1e-12)  # bias-corrected m/sqrt(v)
    m2 = (b1 * (1 - b1) * g1 + (1 - b1) * g2) / (1 - b1**2)
    v2 = (b2 * (1 - b2) * g1**2 + (1 - b2) * g2**2) / (1 - b2**2)
    np.testing.assert_allclose(d2, m2 / (np.sqrt(v2) + eps), rtol=1e-10)


def test_weight_decay_adds_coefficient_times_params():
    d1, _ = _two_directions(hyperopt.inner_optimizer("sgd", weight_decay=0.1))
    np.testing.assert_allclose(d1, np.asarray(G1) + 0.1 * np.asarray(P0), rtol=1e-12)


def test_unknown_optimizer_error():
    with pytest.raises(ValueError, match=r"inner_optimizer='rmsprop' is unknown; allowed: sgd, sgdm, adam"):
        hyperopt.inner_optimizer("rmsprop")


# ----------------------------------------------------------------------------- training system


def test_training_system_steps_match_hand_computation():
    """Quadratic 0.5 ||p - batch||^2, SGD with momentum 0.5, linear schedule, T=4."""
    target = jnp.array([2.0, -1.0])
    theta = jnp.array([LN(0.4), LN(0.2)])
    system = hyperopt.training_system(
        init_params=lambda key: jnp.zeros(2),
        train_loss=lambda p, batch: 0.5 * jnp.sum((p - batch) ** 2),
        sample_batch=lambda key: target,
        optimizer=hyperopt.inner_optimizer("sgdm", momentum=0.5),
        learning_rate=lambda th, t: hyperopt.schedule_value("linear", th, t, 4),
        meta_objective=lambda p, key: jnp.sum(p),
        horizon=4,
    )
    state = system.init(jax.random.key(0))
    p, buf = np.zeros(2), np.zeros(2)
    for t in range(3):
        state, loss = system.step(theta, state, jax.random.key(t))
        g = p - np.asarray(target)
        buf = 0.5 * buf + g
        lr = 0.4 * (4 - t) / 4 + 0.2 * t / 4
        p = p - lr * buf
        np.testing.assert_allclose(state.params, p, rtol=1e-12)
        assert float(loss) == pytest.approx(p.sum(), rel=1e-12)  # loss after the step
        assert int(state.t) == t + 1


# ------------------------------------------------------------------- non-differentiable objective


def _normal_pdf(x):
    return np.exp(-0.5 * x**2) / math.sqrt(2 * math.pi)


def _threshold_system(thresholds, horizon=1):
    """w_0 = 0, train loss -w (gradient -1), fixed LR exp(theta): w_t = t exp(theta).

    The meta-objective is the negative accuracy of the threshold classifier "w > z_i"
    on points z_i: piecewise constant in theta, so its gradient is zero almost
    everywhere, while its Gaussian smoothing has the closed-form gradient
    -mean_i phi((theta - ln z_i) / sigma) / sigma for horizon 1.
    """
    z = jnp.asarray(thresholds)
    return hyperopt.training_system(
        init_params=lambda key: jnp.zeros(()),
        train_loss=lambda w, batch: -w,
        sample_batch=lambda key: None,
        optimizer=hyperopt.inner_optimizer("sgd"),
        learning_rate=lambda th, t: hyperopt.schedule_value("fixed", th, t, horizon),
        meta_objective=lambda w, key: -jnp.mean((w > z).astype(w.dtype)),
        horizon=horizon,
    )


@pytest.mark.parametrize("name", ["es", "pes"])
def test_negative_accuracy_objective_es_pes_match_smoothed_gradient(name):
    thresholds = np.array([0.5, 1.0, 2.0])
    system = _threshold_system(thresholds)
    theta = jnp.array([-0.2])
    sigma = 0.5
    key = jax.random.key(1)
    # Negative control: the exact gradient of the step-function objective is zero.
    exact = jax.grad(lambda th: full_objective(system, th, key, key))(theta)
    assert float(exact[0]) == 0.0
    est = pes.estimators.make(name, system, trunc_len=1, sigma=sigma, num_particles=100)
    state = est.init(key, theta)

    def body(state, k):
        g, state, aux = est.estimate(k, theta, state)
        return state, (g[0], aux["loss"])

    _, (grads, losses) = jax.jit(lambda s, k: jax.lax.scan(body, s, k))(
        state, jax.random.split(jax.random.key(2), 20000)
    )
    grads = np.asarray(grads)
    target = -np.mean(_normal_pdf((float(theta[0]) - np.log(thresholds)) / sigma)) / sigma
    se = grads.std(ddof=1) / np.sqrt(len(grads))
    assert np.all(np.isfinite(grads)) and np.all(np.isfinite(np.asarray(losses)))
    assert abs(grads.mean() - target) < 5 * se, (grads.mean(), target, se)
    # Power: a 5 % bias is rejected with 95 % probability ((5 + 1.645) se < 5 % of the target).
    assert (5 + 1.645) * se < 0.05 * abs(target), (se, target)


def test_pes_with_accuracy_objective_improves_accuracy():
    """Outer loop with PES on a 4-step horizon (K=2, resets mid-run): accuracy rises."""
    thresholds = np.linspace(0.5, 3.0, 6)
    system = _threshold_system(thresholds, horizon=4)
    est = pes.estimators.make("pes", system, trunc_len=2, sigma=0.3, num_particles=20)
    theta0 = jnp.array([-3.0])  # w_t <= 4 e^-3 = 0.2: every point misclassified

    def meta(th, key):
        return {"neg_accuracy_sum": full_objective(system, th, key, key)}

    _, metrics = pes.outer.run(
        jax.random.key(0), theta0, est, optax.adam(0.05), num_steps=300, log_every=50, evaluate=meta
    )
    assert float(meta(theta0, jax.random.key(0))["neg_accuracy_sum"]) == 0.0
    assert float(metrics["neg_accuracy_sum"][-1]) < -2.0  # sum over 4 steps of -accuracy
