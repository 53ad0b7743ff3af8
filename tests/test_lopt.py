"""The MLP learned optimizer (pes.lopt): size, and its update against a hand computation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pes import lopt

pytestmark = pytest.mark.numerics  # exact equivalences: rerun by `make test-portable`


def selector_theta(learned, channel: int, magnitude_bias: float):
    """Meta-parameters whose network outputs d = input[channel] and m = magnitude_bias.

    Layer 1 copies +x and -x into two ReLU units, layer 2 passes them on, the output
    subtracts them (relu(x) - relu(-x) = x); every other weight and bias is zero.
    """
    theta = jax.tree.map(jnp.zeros_like, learned.init_theta(jax.random.key(0)))
    p = theta["params"]
    p["Dense_0"]["kernel"] = p["Dense_0"]["kernel"].at[channel, 0].set(1.0).at[channel, 1].set(-1.0)
    p["Dense_1"]["kernel"] = p["Dense_1"]["kernel"].at[0, 0].set(1.0).at[1, 1].set(1.0)
    p["Dense_2"]["kernel"] = p["Dense_2"]["kernel"].at[0, 0].set(1.0).at[1, 0].set(-1.0)
    p["Dense_2"]["bias"] = p["Dense_2"]["bias"].at[1].set(magnitude_bias)
    return theta


def test_meta_parameter_count_is_1762():
    learned = lopt.mlp_lopt()
    assert lopt.num_meta_params(learned.init_theta(jax.random.key(3))) == 1762
    assert learned.num_inputs == 19


def hand_update(g, p, m0, step, channel, magnitude_bias, exp_mult=1e-3, step_mult=1e-3):
    """numpy: the new momenta and the update of one tensor, written from pes/lopt.py's docstring."""
    beta = np.array(lopt.DECAYS).reshape((-1,) + (1,) * g.ndim)
    m = beta * m0 + (1 - beta) * g
    channels = [g, p] + [m[k] for k in range(len(lopt.DECAYS))]
    if channel < 8:
        x = channels[channel]
        d = x / np.sqrt(1e-5 + np.mean(x**2))
    else:
        tau = lopt.TIMESCALES[channel - 8]
        d = np.full(g.shape, math.tanh(step / tau - 1.0))
    return -d * math.exp(exp_mult * magnitude_bias) * step_mult, m


@pytest.mark.parametrize("channel", [0, 1, 2, 5, 7, 8, 12, 18])
def test_update_matches_a_hand_computed_case(channel):
    learned = lopt.mlp_lopt()
    rng = np.random.default_rng(channel)
    params = {"w": rng.normal(size=(2, 3)), "b": rng.normal(size=(4,))}
    grads = {"w": rng.normal(size=(2, 3)), "b": 5.0 * rng.normal(size=(4,))}
    momenta = {"w": rng.normal(size=(6, 2, 3)), "b": rng.normal(size=(6, 4))}
    step = 37
    state = lopt.LOptState(jax.tree.map(jnp.asarray, momenta), jnp.asarray(step, jnp.int32))
    theta = selector_theta(learned, channel, magnitude_bias=250.0)
    updates, new_state = learned.update(
        theta, jax.tree.map(jnp.asarray, grads), state, jax.tree.map(jnp.asarray, params)
    )
    assert int(new_state.step) == step + 1
    for name in params:
        want_u, want_m = hand_update(grads[name], params[name], momenta[name], step, channel, 250.0)
        np.testing.assert_allclose(np.asarray(updates[name]), want_u, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(np.asarray(new_state.momenta[name]), want_m, rtol=1e-12)


def test_negative_control_wrong_channel_differs():
    """The hand computation can fail: selecting g but expecting p does not match."""
    learned = lopt.mlp_lopt()
    rng = np.random.default_rng(0)
    p, g = rng.normal(size=(5,)), rng.normal(size=(5,))
    state = learned.init({"w": jnp.asarray(p)})
    theta = selector_theta(learned, 0, 0.0)
    updates, _ = learned.update(theta, {"w": jnp.asarray(g)}, state, {"w": jnp.asarray(p)})
    wrong, _ = hand_update(g, p, np.zeros((6, 5)), 0, 1, 0.0)
    assert not np.allclose(np.asarray(updates["w"]), wrong, rtol=1e-3)


def test_init_state_and_bad_hyperparameters():
    learned = lopt.mlp_lopt()
    state = learned.init({"a": jnp.ones((2, 3)), "b": jnp.ones(4)})
    assert state.momenta["a"].shape == (6, 2, 3) and int(state.step) == 0
    with pytest.raises(ValueError, match="step_mult=0"):
        lopt.mlp_lopt(step_mult=0)
    with pytest.raises(ValueError, match="hidden"):
        lopt.mlp_lopt(hidden=())
