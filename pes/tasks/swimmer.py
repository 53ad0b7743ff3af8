"""MuJoCo Swimmer (gymnasium ``Swimmer-v5``) with a linear policy (the paper's figure 8).

The simulator state is MuJoCo's full physics state ``[time, qpos (5), qvel (5)]`` as a
JAX vector.  One environment step = ``frame_skip`` (4) MuJoCo steps with the action held,
run for every particle at once by MuJoCo's native batched ``mujoco.rollout`` on the host.
Everything else matches gymnasium's ``Swimmer-v5`` exactly and is computed in JAX:

* observation: qpos[2:] and qvel (8 numbers);
* reward: forward_reward_weight * (x_after - x_before) / dt - ctrl_cost_weight * ||a||^2
  with the action as given (MuJoCo clips it to the control range [-1, 1] internally);
* reset: qpos = init_qpos + U(-0.1, 0.1), qvel = init_qvel + U(-0.1, 0.1), time 0.  The
  uniform noise is drawn from the JAX reset key (gymnasium draws it from a numpy
  generator seeded by ``reset(seed=...)``, so a JAX key and a gymnasium seed give
  different, equally distributed start states);
* no early termination; the episode is the horizon (gymnasium's TimeLimit: 1000).

The paper used gym 0.12's ``Swimmer-v2`` on mujoco-py / MuJoCo 1.50, which no longer
installs; ``Swimmer-v5`` on MuJoCo 4 has the same model, observation and reward, but a
different simulator build.

Policy a = theta @ obs with theta of shape (2, 8), zero-initialised, no bias, no
observation normalisation; step loss = -reward.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pes._extras import require
from pes.tasks import Task
from pes.tasks.control import HostEnv, SimulatorError, make_evaluate, policy_system

ENV_IDS = ("Swimmer-v5",)


@functools.cache
def _gym_env(env_id: str):
    gymnasium = require("gymnasium", extra="control", by="task 'swimmer'")  # only control tasks need it

    return gymnasium.make(env_id).unwrapped


def _check(name, value, ok, allowed):
    if not ok:
        raise ValueError(f"task 'swimmer': {name}={value!r} is invalid; allowed: {allowed}")


def _check_positive_int(name, value):
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    _check(name, value, ok, "an integer >= 1")


class _Physics(NamedTuple):
    """The MuJoCo model of one gymnasium environment and the constants of its step and reward."""

    env_id: str
    model: Any
    frame_skip: int
    timestep: float
    nq: int
    nv: int
    nu: int
    state_dim: int
    init_qpos: np.ndarray
    init_qvel: np.ndarray
    reset_noise: float
    forward_weight: float
    ctrl_weight: float

    @property
    def dt(self) -> float:
        return self.frame_skip * self.timestep


def _physics(env_id: str) -> _Physics:
    mujoco = require("mujoco", extra="control", by="task 'swimmer'")
    genv = _gym_env(env_id)
    model = genv.model
    nq, nv = int(model.nq), int(model.nv)
    state_dim = int(mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_FULLPHYSICS))
    if state_dim != 1 + nq + nv:
        raise RuntimeError(
            f"{env_id}: unexpected MuJoCo physics state size {state_dim} (expected {1 + nq + nv})"
        )
    return _Physics(
        env_id,
        model,
        int(genv.frame_skip),
        float(model.opt.timestep),
        nq,
        nv,
        int(model.nu),
        state_dim,
        np.asarray(genv.init_qpos, np.float64),
        np.asarray(genv.init_qvel, np.float64),
        float(genv._reset_noise_scale),
        float(genv._forward_reward_weight),
        float(genv._ctrl_cost_weight),
    )


def _host_step(phys: _Physics, num_threads: int):
    """``(host_step, episode_step)``: ``frame_skip`` MuJoCo steps for every copy at once, and the clock."""
    import mujoco
    from mujoco import rollout

    datas = [mujoco.MjData(phys.model) for _ in range(num_threads)]
    dt = phys.dt

    def episode_step(states):
        return np.rint(states[:, 0] / dt).astype(np.int64)

    def host_step(states, actions):
        out, _ = rollout.rollout(phys.model, datas, states, actions[:, None, :], nstep=phys.frame_skip)
        new = out[:, -1]
        # MuJoCo resets an unstable simulation itself (and only warns): detect it from the clock.
        lost = np.abs(new[:, 0] - (states[:, 0] + dt)) > 0.5 * phys.timestep
        if lost.any():
            i = int(np.flatnonzero(lost)[0])
            raise SimulatorError(
                f"{phys.env_id}: MuJoCo found the simulation unstable and reset environment copy {i} of "
                f"{len(states)} at episode step {int(episode_step(states[i : i + 1])[0])}"
            )
        return new

    return host_step, episode_step


def make_env(env_id: str = "Swimmer-v5", horizon: int = 1000, num_threads: int = 1) -> HostEnv:
    """The `HostEnv` of a gymnasium MuJoCo Swimmer."""
    _check("env_id", env_id, env_id in ENV_IDS, ", ".join(ENV_IDS))
    _check_positive_int("horizon", horizon)
    _check_positive_int("num_threads", num_threads)
    phys = _physics(env_id)
    nq, nv, dt = phys.nq, phys.nv, phys.dt

    def reset(key):
        dtype = jnp.result_type(float)
        kq, kv = jax.random.split(key)
        qpos = phys.init_qpos + jax.random.uniform(kq, (nq,), dtype, -phys.reset_noise, phys.reset_noise)
        qvel = phys.init_qvel + jax.random.uniform(kv, (nv,), dtype, -phys.reset_noise, phys.reset_noise)
        return jnp.concatenate([jnp.zeros((1,), dtype), qpos.astype(dtype), qvel.astype(dtype)])

    def observe(state):
        return jnp.concatenate([state[3 : 1 + nq], state[1 + nq :]])

    def reward(state, action, new_state):
        x_velocity = (new_state[1] - state[1]) / dt
        return phys.forward_weight * x_velocity - phys.ctrl_weight * jnp.sum(action**2)

    host_step, episode_step = _host_step(phys, num_threads)
    return HostEnv(
        env_id, phys.state_dim, nq - 2 + nv, phys.nu, reset, observe, reward, host_step, episode_step, horizon
    )


def make(
    env_id: str = "Swimmer-v5",
    horizon: int = 1000,
    eval_episodes: int = 5,
    num_threads: int = 1,
) -> Task:
    """Build the task.

    Args:
      env_id: gymnasium id (``Swimmer-v5``).
      horizon: episode length T (1000 as in gymnasium and the paper).
      eval_episodes: full episodes of the current policy averaged at every log point
        (``eval_return``); their steps are not training steps.
      num_threads: MuJoCo rollout threads for the batched step.
    """
    _check_positive_int("eval_episodes", eval_episodes)
    env = make_env(env_id, horizon, num_threads)
    system = policy_system(env)
    theta0 = jnp.zeros((env.action_dim, env.obs_dim), jnp.result_type(float))
    metadata = {"env_id": env_id, "horizon": horizon}
    evaluate = make_evaluate(system, eval_episodes)
    return Task("swimmer", system, theta0, evaluate, metadata, cost_metric="env_steps")


__all__ = ["make", "make_env"]
