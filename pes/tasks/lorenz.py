"""Learning two parameters of the Lorenz system from its trajectory (NRES paper, Li et al. 2023).

The Lorenz equations dx = a (y - x), dy = x (r - z) - y, dz = x y - b z are integrated by
explicit Euler with step ``dt``.  A model trajectory with the learned parameters
(a, r) = (exp theta["log_a"], exp theta["log_r"]) and the known b runs next to a reference
trajectory with the true parameters (a*, r*, b) = (10, 28, 8/3); both start from the same
point.  Step t's loss is the squared difference of the two z coordinates after the update,
divided by T, so the "sum" objective of one episode is the mean squared z error over the
T steps.  The dynamics are chaotic at these parameters: the exact gradient of a long
episode explodes, which is what the evolution-strategies estimators are for.

State: a float vector (x, y, z, x*, y*, z*).  The start point is ``init_point`` (the NRES
paper's training task: one fixed start) plus, with ``init_noise`` > 0, a Gaussian
perturbation of that standard deviation drawn from the reset key (the same for model and
reference).  The default settings are those of the NRES paper's Lorenz script (T = 2000,
dt = 0.005, theta_0 = (log a, log r) = (3.116, 3.7), i.e. a = 22.6, r = 40.4).

``evaluate(theta, key)`` returns
* ``train_loss``: the meta-objective from the training start point, unperturbed theta;
* ``test_loss``: the same mean over ``eval_inits`` start points perturbed by N(0, 1)
  (fixed seed ``eval_seed``; the NRES paper's test task perturbs every start this way);
* ``a``, ``r``: the learned parameters.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from pes.systems import UnrolledSystem
from pes.tasks import Task, check_ints, check_param

TRUE_A, TRUE_R, TRUE_B = 10.0, 28.0, 8.0 / 3.0


def _check(name, value, ok, allowed):
    check_param("lorenz", name, value, ok, allowed)


def _real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def make(
    horizon: int = 2000,
    dt: float = 0.005,
    init_log_a: float = 3.116,
    init_log_r: float = 3.7,
    init_point: tuple[float, float, float] = (1.2, 1.3, 1.6),
    init_noise: float = 0.0,
    eval_inits: int = 256,
    eval_seed: int = 0,
) -> Task:
    """Build the task.

    Args:
      horizon: T, Euler steps per episode (2000).
      dt: Euler step (0.005).
      init_log_a, init_log_r: theta_0.
      init_point: the (x, y, z) every episode starts from.
      init_noise: std of a Gaussian perturbation of the start point per episode (0: fixed).
      eval_inits: perturbed start points of ``test_loss``.
      eval_seed: seed of those start points.
    """
    check_ints("lorenz", 1, horizon=horizon, eval_inits=eval_inits)
    check_ints("lorenz", 0, eval_seed=eval_seed)
    _check("dt", dt, _real(dt) and dt > 0, "a finite number > 0")
    _check("init_log_a", init_log_a, _real(init_log_a), "a finite number")
    _check("init_log_r", init_log_r, _real(init_log_r), "a finite number")
    _check("init_noise", init_noise, _real(init_noise) and init_noise >= 0, "a finite number >= 0")
    point = tuple(init_point)
    _check("init_point", list(point), len(point) == 3 and all(_real(v) for v in point), "three numbers")

    def start(key, noise):
        dtype = jnp.result_type(float)
        xyz = jnp.asarray(point, dtype)
        if noise:
            xyz = xyz + noise * jax.random.normal(key, (3,), dtype)
        return jnp.concatenate([xyz, xyz])

    def euler(xyz, a, r, b):
        x, y, z = xyz[0], xyz[1], xyz[2]
        return jnp.stack([x + a * (y - x) * dt, y + (x * (r - z) - y) * dt, z + (x * y - b * z) * dt])

    def init(key):
        return start(key, init_noise)

    def step(theta, state, key):
        del key
        dtype = state.dtype
        a = jnp.exp(jnp.asarray(theta["log_a"], dtype))
        r = jnp.exp(jnp.asarray(theta["log_r"], dtype))
        model = euler(state[:3], a, r, jnp.asarray(TRUE_B, dtype))
        ref = euler(state[3:], *(jnp.asarray(v, dtype) for v in (TRUE_A, TRUE_R, TRUE_B)))
        return jnp.concatenate([model, ref]), (model[2] - ref[2]) ** 2 / horizon

    system = UnrolledSystem(init=init, step=step, horizon=horizon, unroll_loss="sum")

    def episode_loss(theta, state):
        def body(s, _):
            s, loss = step(theta, s, None)
            return s, loss

        _, losses = jax.lax.scan(body, state, None, length=horizon)
        return jnp.sum(losses)

    eval_keys = jax.random.split(jax.random.key(eval_seed), eval_inits)

    def evaluate(theta, key):
        del key  # fixed start points: the same evaluation for every method and log point
        train = episode_loss(theta, start(None, 0.0))
        tests = jax.vmap(lambda k: episode_loss(theta, start(k, 1.0)))(eval_keys)
        return {
            "train_loss": train,
            "test_loss": jnp.mean(tests),
            "a": jnp.exp(theta["log_a"]),
            "r": jnp.exp(theta["log_r"]),
        }

    dtype = jnp.result_type(float)
    theta0 = {"log_a": jnp.asarray(init_log_a, dtype), "log_r": jnp.asarray(init_log_r, dtype)}
    metadata = {"true_a": TRUE_A, "true_r": TRUE_R, "b": TRUE_B, "horizon": horizon, "dt": dt}
    return Task(
        "lorenz",
        system,
        theta0,
        evaluate,
        metadata,
        differentiable=True,
        objective="train_loss",
        optimum={"log_a": math.log(TRUE_A), "log_r": math.log(TRUE_R)},
        eval_keys=eval_keys,
    )
