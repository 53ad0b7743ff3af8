"""A per-parameter MLP learned optimizer (LOpt), written as an optax-style pure pair.

The model follows the "MLPLOpt" of Metz et al. 2019 ("Understanding and correcting
pathologies in the training of learned optimizers", arXiv 1810.10180) as described in
docs/figures/figure7.md:

* inputs for every scalar parameter p with gradient g at inner step t (19 in all):
  g, p and six EMA momenta m_k <- beta_k m_k + (1 - beta_k) g (updated *before* use,
  beta = 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999); each of these 8 channels is multiplied by
  rsqrt(1e-5 + mean over the whole tensor of x^2); then 11 un-normalised time features
  tanh(t / tau - 1), tau = 1, 3, 10, ..., 1e5 (t = steps taken before this one);
* a flax MLP 19 -> 32 -> 32 -> 2 with ReLU (weights lecun-normal, truncated; biases 0):
  1,762 meta-parameters;
* outputs (d, m); step = d * exp(exp_mult * m) * step_mult; p <- p - step.

The meta-parameters theta are the flax params pytree of that MLP and are an *argument*
of ``update``, so any gradient estimator can meta-train them::

    lopt = mlp_lopt()
    theta = lopt.init_theta(key)
    opt_state = lopt.init(params)
    updates, opt_state = lopt.update(theta, grads, opt_state, params)
    params = optax.apply_updates(params, updates)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from pes._extras import require

nn = require("flax.linen", extra="suite", by="pes.lopt")

PyTree = Any
DECAYS = (0.1, 0.5, 0.9, 0.99, 0.999, 0.9999)
"""The decay rates of the six EMA momenta fed to the MLP."""
TIMESCALES = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e4, 1e5)
"""The timescales τ of the time features tanh(t / τ − 1)."""
NORM_EPS = 1e-5
"""ε of the second-moment normalisation x · rsqrt(ε + mean(x²))."""


class MLPNet(nn.Module):
    """The per-parameter network: ReLU MLP ending in 2 outputs (direction, magnitude)."""

    hidden: Sequence[int] = (32, 32)

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(2)(x)


class LOptState(NamedTuple):
    """Per-parameter momenta (params' tree, each leaf with a leading axis of len(decays))
    and the number of steps taken."""

    momenta: PyTree
    step: jax.Array


class LearnedOptimizer(NamedTuple):
    """``init_theta(key) -> theta``; ``init(params) -> state``;
    ``update(theta, grads, state, params) -> (updates, state)`` (optax sign convention:
    ``params + updates`` is the new point)."""

    init_theta: Callable[[jax.Array], PyTree]
    init: Callable[[PyTree], LOptState]
    update: Callable[[PyTree, PyTree, LOptState, PyTree], tuple[PyTree, LOptState]]
    num_inputs: int


def second_moment_normalize(x: jax.Array, axis: int | tuple[int, ...] | None) -> jax.Array:
    """x * rsqrt(eps + mean(x^2)) over ``axis`` (the whole tensor, per feature channel)."""
    return x * jax.lax.rsqrt(NORM_EPS + jnp.mean(jnp.square(x), axis=axis, keepdims=True))


def time_features(
    step: jax.Array, timescales: Sequence[float] = TIMESCALES, dtype: jnp.dtype = jnp.float32
) -> jax.Array:
    """tanh(t / tau - 1) for every timescale tau: shape (len(timescales),)."""
    taus = jnp.asarray(timescales, dtype)
    return jnp.tanh(step.astype(dtype) / taus - 1.0)


def mlp_lopt(
    hidden: Sequence[int] = (32, 32),
    exp_mult: float = 1e-3,
    step_mult: float = 1e-3,
    decays: Sequence[float] = DECAYS,
    timescales: Sequence[float] = TIMESCALES,
) -> LearnedOptimizer:
    """Build the MLP learned optimizer (see the module docstring)."""
    hidden = tuple(int(h) for h in hidden)
    if not hidden or any(h < 1 for h in hidden):
        raise ValueError(f"lopt hidden={list(hidden)} is invalid; allowed: a non-empty list of integers >= 1")
    for name, value in (("exp_mult", exp_mult), ("step_mult", step_mult)):
        if not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"lopt {name}={value!r} is invalid; allowed: a number > 0")
    net = MLPNet(hidden)
    num_inputs = 2 + len(decays) + len(timescales)

    def init_theta(key):
        return net.init(key, jnp.zeros((1, num_inputs), jnp.float32))

    def init(params):
        momenta = jax.tree.map(lambda p: jnp.zeros((len(decays),) + jnp.shape(p), jnp.result_type(p)), params)
        return LOptState(momenta, jnp.zeros((), jnp.int32))

    def leaf_update(theta, g, p, m, t_feats):
        beta = jnp.asarray(decays, g.dtype).reshape((-1,) + (1,) * g.ndim)
        m = beta * m + (1.0 - beta) * g[None]
        channels = jnp.concatenate([g[None], p[None], m], axis=0)  # (8, *p.shape)
        channels = jnp.moveaxis(channels, 0, -1).reshape(-1, channels.shape[0])  # (size, 8)
        channels = second_moment_normalize(channels, axis=0)
        feats = jnp.broadcast_to(t_feats.astype(channels.dtype), (channels.shape[0], t_feats.shape[0]))
        out = net.apply(theta, jnp.concatenate([channels, feats], axis=1))
        direction, magnitude = out[:, 0], out[:, 1]
        step = direction * jnp.exp(exp_mult * magnitude) * step_mult
        return -step.reshape(p.shape).astype(p.dtype), m

    def update(theta, grads, state, params):
        t_feats = time_features(state.step, timescales)
        leaves_p, treedef = jax.tree.flatten(params)
        leaves_g = treedef.flatten_up_to(grads)
        leaves_m = treedef.flatten_up_to(state.momenta)
        outs = [leaf_update(theta, g, p, m, t_feats) for g, p, m in zip(leaves_g, leaves_p, leaves_m)]
        updates = jax.tree.unflatten(treedef, [u for u, _ in outs])
        momenta = jax.tree.unflatten(treedef, [m for _, m in outs])
        return updates, LOptState(momenta, state.step + 1)

    return LearnedOptimizer(init_theta, init, update, num_inputs)


def num_meta_params(theta: PyTree) -> int:
    """The number of scalars in the meta-parameters θ."""
    return sum(int(jnp.size(x)) for x in jax.tree.leaves(theta))
