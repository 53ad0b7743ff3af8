"""A linear-quadratic unrolled system whose exact gradient is known.

s_{t+1} = a * s_t + theta (elementwise, s, theta in R^dim), step loss 0.5 ||s_{t+1} - c||^2.
The total loss over an episode is quadratic in theta and in every perturbation, so
Gaussian smoothing adds only a constant: ``jax.grad`` of the full objective is the exact
target of every unbiased estimator.  Used by the tests and the benchmarks.
"""

from __future__ import annotations

import jax.numpy as jnp

from pes.systems import UnrolledSystem, full_objective
from pes.tasks import Task


def make(
    dim: int = 4,
    decay: float = 0.9,
    target: float = 1.0,
    horizon: int | None = 100,
    theta_init: float = 0.0,
) -> Task:
    """Build the task (``decay`` is a, ``target`` the entries of c)."""
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"task 'linear_quadratic': dim={dim!r} is invalid; allowed: an integer >= 1")

    def init(key):
        del key
        return jnp.zeros((dim,), jnp.result_type(float))

    def step(theta, state, key):
        del key
        new_state = decay * state + theta
        return new_state, 0.5 * jnp.sum((new_state - target) ** 2)

    system = UnrolledSystem(init=init, step=step, horizon=horizon, unroll_loss="sum")

    def evaluate(theta, key):
        if horizon is None:
            return {}
        return {"full_loss": full_objective(system, theta, key, key)}

    theta0 = jnp.full((dim,), theta_init, jnp.result_type(float))
    return Task("linear_quadratic", system, theta0, evaluate, {})
