"""A tiny deterministic linear "environment" stepped on the host, with a known gradient.

State ``[t, s (dim)]``; observation ``phi(t) = (1, cos(omega t), sin(omega t))`` (so the
action a_t = theta @ phi(t) does not depend on the state); transition
s' = decay * s + a (on the host, through the same callback path as MuJoCo); reward
-0.5 ||s' - target||^2.  The return is quadratic in theta, so antithetic ES / PES have
no smoothing bias and ``jax.grad`` of the pure-JAX twin (``host=False``) is the exact
expected value of every unbiased estimator; truncated ES misses theta's influence on s
through earlier truncations and is biased.  Used by the tests.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from pes.tasks import Task
from pes.tasks.control import HostEnv, make_evaluate, policy_system

OMEGA = 0.7


def make_env(dim: int = 2, decay: float = 0.8, target: float = 1.0, horizon: int = 20) -> HostEnv:
    """The host-side environment: a ``dim``-dimensional state decaying by ``decay``, driven to ``target``."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"task 'linear_control': dim={dim!r} is invalid; allowed: an integer >= 1")
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"task 'linear_control': horizon={horizon!r} is invalid; allowed: an integer >= 1")

    def reset(key):
        del key  # deterministic start
        return jnp.zeros((1 + dim,), jnp.result_type(float))

    def observe(state):
        t = state[0]
        return jnp.stack([jnp.ones_like(t), jnp.cos(OMEGA * t), jnp.sin(OMEGA * t)])

    def reward(state, action, new_state):
        del state, action
        return -0.5 * jnp.sum((new_state[1:] - target) ** 2)

    def host_step(states, actions):
        new = np.empty_like(states)
        new[:, 0] = states[:, 0] + 1.0
        new[:, 1:] = decay * states[:, 1:] + actions
        return new

    def episode_step(states):
        return np.rint(states[:, 0]).astype(np.int64)

    return HostEnv(
        "linear_control", 1 + dim, 3, dim, reset, observe, reward, host_step, episode_step, horizon
    )


def jax_transition(decay: float) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The pure-JAX twin of ``host_step`` (differentiable)."""

    def transition(state, action):
        return jnp.concatenate([state[:1] + 1.0, decay * state[1:] + action])

    return transition


def make(
    dim: int = 2,
    decay: float = 0.8,
    target: float = 1.0,
    horizon: int = 20,
    eval_episodes: int = 1,
    host: bool = True,
) -> Task:
    """Build the task; ``host=False`` steps the dynamics in JAX instead of the host."""
    env = make_env(dim, decay, target, horizon)
    system = policy_system(env, None if host else jax_transition(decay))
    theta0 = jnp.zeros((env.action_dim, env.obs_dim), jnp.result_type(float))
    evaluate = make_evaluate(system, eval_episodes)
    return Task("linear_control", system, theta0, evaluate, cost_metric="env_steps")


__all__ = ["jax_transition", "make", "make_env"]
