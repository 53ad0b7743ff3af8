"""Swimmer environment-step throughput: the suite's batched path vs a plain gymnasium loop.

    PYTHONPATH=. python benchmarks/swimmer_throughput.py [--batch 20] [--steps 1000] [--repeats 3]

Measured (best of ``--repeats``, after one warm-up/compile call):

* ``jax+mujoco.rollout``: what training runs: ``batch`` policy rollouts of ``steps`` steps
  under one ``jit`` (vmapped `systems.unroll` of the Swimmer system; one host call to
  ``mujoco.rollout`` per environment step for the whole batch);
* ``mujoco.rollout only``: the same batched host step called from a Python loop, no JAX;
* ``gymnasium loop``: one ``gymnasium.make("Swimmer-v5")`` env at a time, numpy policy,
  ``batch`` episodes of ``steps`` steps one after the other.

Prints one markdown table row per path (env-steps/s).  Not a test: timings depend on the
machine and its load.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np

from pes import systems
from pes.tasks import control, swimmer


def best_of(fn, repeats):
    fn()  # warm-up (and compile)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    batch, steps = args.batch, args.steps
    env = swimmer.make_env(horizon=steps + 1)
    system = control.policy_system(env)
    rng = np.random.default_rng(0)
    thetas = rng.normal(0.0, 0.3, (batch, 2, 8))
    starts = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), batch))

    unroll = jax.jit(
        jax.vmap(
            lambda th, s: systems.unroll(system, th, s, jnp.zeros((), jnp.int32), jax.random.key(1), steps)[2]
        )
    )
    t_jax = best_of(lambda: jax.block_until_ready(unroll(jnp.asarray(thetas), starts)), args.repeats)

    def host_only():
        s = np.asarray(starts, np.float64)
        for _ in range(steps):
            obs = np.concatenate([s[:, 3:6], s[:, 6:]], axis=1)
            s = env.host_step(s, np.einsum("bij,bj->bi", thetas, obs))

    t_host = best_of(host_only, args.repeats)

    genv = gymnasium.make("Swimmer-v5", max_episode_steps=steps + 1)

    def gym_loop():
        for b in range(batch):
            obs, _ = genv.reset(seed=b)
            for _ in range(steps):
                obs, *_ = genv.step(thetas[b] @ obs)

    t_gym = best_of(gym_loop, args.repeats)
    n = batch * steps
    print(
        f"# Swimmer-v5 throughput: batch {batch} x {steps} steps, best of {args.repeats}; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    print("| path | env-steps/s | us per env-step |")
    print("|---|---|---|")
    for name, t in (
        ("jax+mujoco.rollout (training path)", t_jax),
        ("mujoco.rollout only (no JAX)", t_host),
        ("gymnasium loop, one env at a time", t_gym),
    ):
        print(f"| {name} | {n / t:,.0f} | {t / n * 1e6:.1f} |")


if __name__ == "__main__":
    main()
