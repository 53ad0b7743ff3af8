"""The MuJoCo Swimmer environment wrapper (pes.tasks.swimmer, pes.tasks.control)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pes import systems, tasks
from pes.tasks import control, swimmer

gymnasium = pytest.importorskip("gymnasium")  # the `control` extra
pytest.importorskip("mujoco")


@pytest.fixture(scope="module")
def env():
    return swimmer.make_env(horizon=1000)


def _gym_start(seed):
    genv = gymnasium.make("Swimmer-v5")
    obs, _ = genv.reset(seed=seed)
    data = genv.unwrapped.data
    state = np.concatenate([[data.time], data.qpos, data.qvel])
    return genv, obs, state


def test_batched_policy_rollout_equals_single_gymnasium_envs(env):
    """All copies stepped in one host call == one gymnasium env per copy, same start and policy."""
    system = control.policy_system(env)
    seeds = [0, 7, 123]
    num_steps = 25
    rng = np.random.default_rng(0)
    thetas = rng.normal(0.0, 1.5, (len(seeds), 2, 8))  # large enough that MuJoCo clips some actions
    starts, gym_envs, gym_obs = [], [], []
    for s in seeds:
        genv, obs, state = _gym_start(s)
        gym_envs.append(genv)
        gym_obs.append(obs)
        starts.append(state)
    starts = jnp.asarray(np.stack(starts))
    for i in range(len(seeds)):
        np.testing.assert_array_equal(np.asarray(env.observe(starts[i])), gym_obs[i])

    def one(theta, state):
        return systems.unroll(system, theta, state, jnp.zeros((), jnp.int32), jax.random.key(0), num_steps)

    final, _, losses, ends = jax.jit(jax.vmap(one))(jnp.asarray(thetas), starts)
    assert not np.asarray(ends).any()

    clipped = 0
    for i, genv in enumerate(gym_envs):
        obs = gym_obs[i]
        for j in range(num_steps):
            action = thetas[i] @ obs
            clipped += int(np.any(np.abs(action) > 1))
            obs, reward, terminated, truncated, _ = genv.step(action)
            assert not terminated and not truncated
            np.testing.assert_allclose(-float(losses[i, j]), reward, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np.asarray(env.observe(final[i])), obs, rtol=1e-12, atol=1e-12)
    assert clipped > 0  # the comparison covered MuJoCo's control clipping


def test_reset_noise_matches_gymnasium_distribution(env):
    states = jax.vmap(env.reset)(jax.random.split(jax.random.key(1), 2000))
    states = np.asarray(states)
    assert states.shape == (2000, 11)
    assert np.all(states[:, 0] == 0.0)
    assert np.all(np.abs(states[:, 1:]) <= 0.1)
    # U(-0.1, 0.1): mean 0, std 0.1/sqrt(3); standard errors from 2000 draws.
    np.testing.assert_allclose(states[:, 1:].mean(0), 0.0, atol=5 * 0.0577 / np.sqrt(2000))
    np.testing.assert_allclose(states[:, 1:].std(0), 0.1 / np.sqrt(3), rtol=0.08)
    # Different keys give different starts; one key gives one start (pairs seeded identically).
    assert not np.allclose(states[0], states[1])
    np.testing.assert_array_equal(env.reset(jax.random.key(5)), env.reset(jax.random.key(5)))


def test_reset_inside_a_truncation():
    """An episode ending mid-unroll restarts from init(reset key) and counts steps from 0."""
    env = swimmer.make_env(horizon=3)
    system = control.policy_system(env)
    theta = 0.3 * jnp.ones((2, 8))
    start = env.reset(jax.random.key(2))
    data_key = jax.random.key(9)
    state, t, losses, ends = jax.jit(
        lambda th, s: systems.unroll(system, th, s, jnp.zeros((), jnp.int32), data_key, 5)
    )(theta, start)
    np.testing.assert_array_equal(np.asarray(ends), [False, False, True, False, False])
    assert int(t) == 2
    keys = systems.step_keys(data_key, 5)
    restart = system.init(keys[2, 1])
    # Reference: the first episode on its own, then the second from the reset state.
    _, _, first, _ = systems.unroll(system, theta, start, jnp.zeros((), jnp.int32), data_key, 3)
    s2, t2, second, _ = systems.unroll(system, theta, restart, jnp.zeros((), jnp.int32), data_key, 2)
    np.testing.assert_allclose(np.asarray(losses), np.concatenate([first, second]), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(state), np.asarray(s2), rtol=1e-12)
    assert float(state[0]) == pytest.approx(2 * 0.04)  # MuJoCo clock restarted with the episode


def test_unstable_simulation_is_reported_with_copy_and_step(env):
    states = np.zeros((3, 11))
    states[:, 0] = 0.4  # episode step 10
    states[1, 7] = 1e30  # MuJoCo flags this as unstable and resets the copy
    with pytest.raises(
        control.SimulatorError, match=r"unstable and reset environment copy 1 of 3 at episode step 10"
    ):
        env.host_step(states, np.zeros((3, 2)))


def test_nonfinite_action_is_reported_through_jit(env):
    system = control.policy_system(env)
    theta = jnp.zeros((2, 8)).at[0, 0].set(jnp.nan)
    start = env.reset(jax.random.key(0))
    with pytest.raises(Exception, match=r"non-finite action in environment copy 0 of 1 at episode step 0"):
        jax.block_until_ready(
            systems.unroll(system, theta, start, jnp.zeros((), jnp.int32), jax.random.key(0), 2)
        )


def test_task_evaluate_and_bad_values():
    task = tasks.make("swimmer", eval_episodes=2, horizon=5)
    out = jax.jit(task.evaluate)(task.theta_init, jax.random.key(0))
    assert set(out) == {"eval_return", "eval_return_std"}
    assert np.isfinite(float(out["eval_return"]))
    assert task.theta_init.shape == (2, 8) and not np.any(np.asarray(task.theta_init))
    assert task.cost_metric == "env_steps"
    with pytest.raises(ValueError, match=r"env_id='Swimmer-v2' is invalid; allowed: Swimmer-v5"):
        tasks.make("swimmer", env_id="Swimmer-v2")
    with pytest.raises(ValueError, match=r"eval_episodes=0 is invalid"):
        tasks.make("swimmer", eval_episodes=0)
