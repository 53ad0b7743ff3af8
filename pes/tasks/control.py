"""Control tasks whose simulator runs on the host, wrapped as an `UnrolledSystem`.

A `HostEnv` splits an environment into what JAX can do (reset noise, observation,
reward: pure functions of the simulator state, kept as a flat float vector) and what it
cannot (the simulator's transition, a batched numpy function run through
`jax.pure_callback`).  `policy_system` closes it over a linear policy a = theta @ obs
and the loss -reward, so every estimator of `pes.estimators` (PES, truncated and
full-episode ES, ARS, OpenAI-ES) and the compiled outer loop work on it unchanged:

* all particles of an estimate step in **one** host call per environment step (the
  callback is vmapped with ``vmap_method="broadcast_all"``, so the simulator sees a
  (num_particles, state_dim) batch);
* each particle has its own copy of the simulator state; the two members of an
  antithetic pair are reset from the same key, hence seeded identically;
* episode ends (the horizon) and resets are the estimators' usual bookkeeping.

A simulator failure (non-finite action or state, or a simulator that had to reset
itself) raises `SimulatorError` naming the environment copy and its episode step; the
experiment runner adds the run's seed and outer step and keeps the rows already logged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pes.systems import UnrolledSystem, unroll


class SimulatorError(RuntimeError):
    """The simulator produced a non-finite or reset state (or got a non-finite action)."""


class HostEnv(NamedTuple):
    """An environment with a host-side batched transition.

    Attributes:
      name: for messages.
      state_dim, obs_dim, action_dim: sizes of the flat state, observation and action.
      reset: ``reset(key) -> state`` (pure JAX, float vector of ``state_dim``).
      observe: ``observe(state) -> obs`` (pure JAX).
      reward: ``reward(state, action, new_state) -> scalar`` (pure JAX).
      host_step: ``host_step(states, actions) -> new_states`` on numpy float64 arrays of
        shapes (B, state_dim), (B, action_dim); may raise `SimulatorError`.
      episode_step: ``episode_step(states) -> (B,) int`` numpy, the step index within the
        episode (for error messages).
      horizon: episode length T.
    """

    name: str
    state_dim: int
    obs_dim: int
    action_dim: int
    reset: Callable
    observe: Callable
    reward: Callable
    host_step: Callable
    episode_step: Callable
    horizon: int


def check_batch(env: HostEnv, states: np.ndarray, actions: np.ndarray, new_states: np.ndarray | None) -> None:
    """Raise `SimulatorError` for the first environment copy with a non-finite input/output."""
    for what, arr in (("action", actions), ("state", states), ("next state", new_states)):
        if arr is None:
            continue
        bad = ~np.all(np.isfinite(arr), axis=-1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            step = int(env.episode_step(states[i : i + 1])[0]) if what != "state" else "?"
            raise SimulatorError(
                f"{env.name}: non-finite {what} in environment copy {i} of {len(arr)} at episode step "
                f"{step}: {np.array2string(arr[i], precision=4)}"
            )


def host_transition(env: HostEnv) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``transition(state, action) -> new_state`` calling ``env.host_step`` on the host.

    Under ``vmap`` every batched argument is broadcast to the full batch, flattened to
    (B, dim) and handed to the simulator in one call.
    """

    def callback(packed):
        # One argument (state and action side by side): every callback argument costs
        # a conversion, and this call runs once per environment step.
        packed = np.asarray(packed)
        batch = packed.shape[:-1]
        flat = packed.reshape(-1, env.state_dim + env.action_dim).astype(np.float64, copy=False)
        s = np.ascontiguousarray(flat[:, : env.state_dim])
        a = np.ascontiguousarray(flat[:, env.state_dim :])
        check_batch(env, s, a, None)
        new = env.host_step(s, a)
        check_batch(env, s, a, new)
        return new.reshape(batch + (env.state_dim,)).astype(packed.dtype)

    def transition(state, action):
        out = jax.ShapeDtypeStruct(jnp.shape(state), jnp.result_type(state))
        packed = jnp.concatenate([state, action.astype(jnp.result_type(state))], axis=-1)
        return jax.pure_callback(callback, out, packed, vmap_method="broadcast_all")

    return transition


def linear_policy(theta: jax.Array, obs: jax.Array) -> jax.Array:
    """a = theta @ obs, theta of shape (action_dim, obs_dim)."""
    return theta @ obs


def policy_system(env: HostEnv, transition: Callable | None = None) -> UnrolledSystem:
    """The `UnrolledSystem` of ``env`` under a linear policy; step loss = -reward.

    ``transition`` defaults to the host callback; a pure-JAX transition can be passed
    instead (used to differentiate a JAX twin of a test environment).
    """
    transition = transition or host_transition(env)

    def step(theta, state, key):
        del key  # the environments are deterministic given their reset state
        action = linear_policy(theta, env.observe(state))
        new_state = transition(state, action.astype(jnp.result_type(state)))
        return new_state, -env.reward(state, action, new_state)

    return UnrolledSystem(init=env.reset, step=step, horizon=env.horizon, unroll_loss="sum")


def make_evaluate(system: UnrolledSystem, num_episodes: int) -> Callable:
    """``evaluate(theta, key)``: mean and std of the return of ``num_episodes`` full
    episodes of the current (unperturbed) policy from fresh resets, all environments
    stepped together.  These steps are not training steps."""
    if isinstance(num_episodes, bool) or not isinstance(num_episodes, int) or num_episodes < 1:
        raise ValueError(f"eval_episodes={num_episodes!r} is invalid; allowed: an integer >= 1")
    horizon = system.horizon

    def episode_return(theta, key):
        init_key, data_key = jax.random.split(key)
        state = system.init(init_key)
        _, _, losses, _ = unroll(system, theta, state, jnp.zeros((), jnp.int32), data_key, horizon)
        return -jnp.sum(losses)

    def evaluate(theta, key):
        returns = jax.vmap(episode_return, in_axes=(None, 0))(theta, jax.random.split(key, num_episodes))
        return {"eval_return": jnp.mean(returns), "eval_return_std": jnp.std(returns)}

    return evaluate
