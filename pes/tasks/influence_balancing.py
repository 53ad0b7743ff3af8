"""Influence balancing (Tallec & Ollivier 2017; Vicol et al. 2021, Sec. 6.1).

A linear system s <- A s + theta * b with A = 0.5 I + 0.5 (superdiagonal shift) and
b = (+1 x num_positive, -1 x (n - num_positive)), started from s = 1.  The loss of a
truncation is 0.5 (s[0] - 1)^2 at its final state (``unroll_loss="last"``).  The
short-range influence of theta on s[0] is positive, its long-range influence negative,
so truncated methods are pulled the wrong way.  The steady state has s[0] = -6 theta
for the default sizes, so the optimum is theta* = -1/6.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pes.systems import UnrolledSystem
from pes.tasks import Task


def _check(name, value, ok, allowed):
    if not ok:
        raise ValueError(f"task 'influence_balancing': {name}={value!r} is invalid; allowed: {allowed}")


def make(
    n: int = 23,
    num_positive: int = 10,
    theta_init: float = 0.5,
    eval_steps: int = 500,
    horizon: int | None = None,
) -> Task:
    """Build the task.

    Args:
      n: state dimension.
      num_positive: number of +1 entries of b (the rest are -1).
      theta_init: initial scalar theta.
      eval_steps: length of the evaluation unroll from the all-ones state (paper: 500).
      horizon: None (never-ending, as in the paper) or a finite episode length.
    """
    _check("n", n, isinstance(n, int) and n >= 1, "an integer >= 1")
    _check(
        "num_positive",
        num_positive,
        isinstance(num_positive, int) and 0 <= num_positive <= n,
        f"an integer in [0, {n}]",
    )
    _check("eval_steps", eval_steps, isinstance(eval_steps, int) and eval_steps >= 1, "an integer >= 1")
    _check(
        "horizon",
        horizon,
        horizon is None or (isinstance(horizon, int) and horizon >= 1),
        "null or an integer >= 1",
    )

    def matrices(dtype):
        a = 0.5 * jnp.eye(n, dtype=dtype) + 0.5 * jnp.eye(n, k=1, dtype=dtype)
        b = jnp.concatenate([jnp.ones(num_positive, dtype), -jnp.ones(n - num_positive, dtype)])
        return a, b

    def init(key):
        del key
        return jnp.ones((n,), jnp.result_type(float))

    def step(theta, state, key):
        del key
        a, b = matrices(state.dtype)
        new_state = a @ state + theta * b
        return new_state, 0.5 * (new_state[0] - 1.0) ** 2

    def evaluate(theta, key):
        del key

        def body(s, _):
            return step(theta, s, None)[0], None

        s, _ = jax.lax.scan(body, init(None).astype(jnp.result_type(theta)), None, length=eval_steps)
        return {"loss": 0.5 * (s[0] - 1.0) ** 2}

    system = UnrolledSystem(init=init, step=step, horizon=horizon, unroll_loss="last")
    theta0 = jnp.asarray(theta_init, jnp.result_type(float))
    optimum = None
    if n == 23 and num_positive == 10:
        optimum = -1.0 / 6.0
    return Task("influence_balancing", system, theta0, evaluate, optimum=optimum)
