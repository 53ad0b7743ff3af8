"""The learned-optimizer task's options for the NRES paper's setting (GELU inner MLP,
validation meta-loss after each update, one fixed "single sequence"), on test-sized data.
The defaults (figure 7's task) are covered by tests/test_figure7.py."""

from __future__ import annotations

import math

import jax
import numpy as np
import optax
import pytest

from pes import systems
from pes.tasks import lopt_image_mlp
from tests.test_figure7 import data_dir, make_task  # noqa: F401  (data_dir is a fixture)

NRES = dict(hidden=[8, 8], activation="gelu", meta_loss="val_post")


def _step_losses(task, theta, key, n=3):
    state = task.system.init(key)
    out = []
    for i in range(n):
        state, loss = task.system.step(theta, state, jax.random.fold_in(key, i))
        out.append(float(loss))
    return state, out


@pytest.mark.integration
def test_val_post_is_the_validation_ce_after_the_update(data_dir):  # noqa: F811
    task = make_task(data_dir, **NRES)
    assert task.dataset.num_train == 400  # the last 20 % of 500 training images is validation
    theta, key = task.theta_init, jax.random.key(0)
    state = task.system.init(key)
    new, loss = task.system.step(theta, state, jax.random.key(1))
    # by hand: the validation batch of step 0, CE at the updated parameters, clipped, / T
    val_x, val_y = lopt_image_mlp._load("fashion_mnist", "idx", str(data_dir), 8, False, 0.2)[6:]
    vkey = jax.random.fold_in(jax.random.fold_in(jax.random.key(1), 0), 1)
    idx = np.asarray(jax.random.randint(vkey, (16,), 0, len(val_x)))
    model = lopt_image_mlp.ImageMLP((8, 8), "gelu")
    logits = model.apply(new[0], val_x[idx])
    ce = float(np.mean(optax.softmax_cross_entropy_with_integer_labels(logits, val_y[idx])))
    np.testing.assert_allclose(
        float(loss), min(ce, lopt_image_mlp.LOSS_CEILING) / task.system.horizon, rtol=1e-5
    )
    # negative control: the default meta-loss (training batch before the update) differs
    default = make_task(data_dir, hidden=[8, 8], activation="gelu")
    _, loss_default = default.system.step(theta, default.system.init(key), jax.random.key(1))
    assert not math.isclose(float(loss), float(loss_default), rel_tol=1e-3)


def test_single_sequence_ignores_the_estimators_keys(data_dir):  # noqa: F811
    task = make_task(data_dir, single_sequence_seed=88, **NRES)
    theta = task.theta_init
    s_a, l_a = _step_losses(task, theta, jax.random.key(0))
    s_b, l_b = _step_losses(task, theta, jax.random.key(7))
    assert l_a == l_b
    for x, y in zip(jax.tree.leaves(s_a), jax.tree.leaves(s_b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # its evaluation is that one run: the full objective with any keys
    out = jax.jit(task.evaluate)(theta, jax.random.key(3))
    full = systems.full_objective(task.system, theta, jax.random.key(1), jax.random.key(2))
    np.testing.assert_allclose(float(out["meta_loss_eval"]), float(full), rtol=1e-5)
    assert len(task.eval_keys) == 1
    # negative controls: another seed is another sequence; without it the keys matter
    other = make_task(data_dir, single_sequence_seed=89, **NRES)
    assert _step_losses(other, theta, jax.random.key(0))[1] != l_a
    free = make_task(data_dir, **NRES)
    assert _step_losses(free, theta, jax.random.key(0))[1] != _step_losses(free, theta, jax.random.key(7))[1]


def test_gelu_changes_the_model_and_relu_is_the_default(data_dir):  # noqa: F811
    key = jax.random.key(0)
    relu = make_task(data_dir, hidden=[8])
    explicit = make_task(data_dir, hidden=[8], activation="relu", meta_loss="train_pre")
    gelu = make_task(data_dir, hidden=[8], activation="gelu")
    l_relu = _step_losses(relu, relu.theta_init, key)[1]
    assert _step_losses(explicit, explicit.theta_init, key)[1] == l_relu
    assert _step_losses(gelu, gelu.theta_init, key)[1] != l_relu


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(activation="tanh"), "activation='tanh' is invalid; allowed: relu, gelu"),
        (dict(meta_loss="val"), "meta_loss='val' is invalid; allowed: train_pre, val_post"),
        (dict(single_sequence_seed=-1), "single_sequence_seed=-1 is invalid"),
    ],
)
def test_bad_options_fail_with_one_line(data_dir, kw, match):  # noqa: F811
    with pytest.raises(ValueError, match=match):
        make_task(data_dir, **kw)
