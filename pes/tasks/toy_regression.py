"""Toy 2D regression: meta-learning a linear learning-rate schedule (the paper's figure 3).

The inner problem minimises

    f(x) = sqrt(x0^2 + 5) - sqrt(5) + sin^2(x1) exp(-5 x0^2) + 0.25 |x1 - 100|

over x in R^2 from x_0 = (1, 1) with plain SGD for T = 100 steps.  The learning rate
follows the ``linear`` schedule lr_t = exp(theta0) (T - t)/T + exp(theta1) t/T, so
theta = (initial log-LR, final log-LR).  The loss of step t is f(x_{t+1}) and the
meta-objective L(theta) is the sum of the T step losses (``unroll_loss="sum"``).  The
surface L(theta) is chaotic: truncated methods stall on it, PES reaches the valley of
high initial and low final learning rate (minimum L ~ 552 near theta = (2.76, -4.79)).

The system is built with `pes.hyperopt.training_system`, so its state is a
`TrainingState` (x, optimizer state, step counter).  The logged metric
``meta_objective`` is the full-horizon L(theta) from x_0 at every log point.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from pes import hyperopt
from pes.systems import full_objective
from pes.tasks import Task

SQRT5 = math.sqrt(5.0)


def toy_loss(x: jnp.ndarray) -> jnp.ndarray:
    """The inner objective f(x) of E2 (x has shape (2,))."""
    return (
        jnp.sqrt(x[0] ** 2 + 5.0)
        - SQRT5
        + jnp.sin(x[1]) ** 2 * jnp.exp(-5.0 * x[0] ** 2)
        + 0.25 * jnp.abs(x[1] - 100.0)
    )


def _check(name, value, ok, allowed):
    if not ok:
        raise ValueError(f"task 'toy_regression': {name}={value!r} is invalid; allowed: {allowed}")


def make(
    horizon: int = 100,
    x_init: tuple[float, float] | list[float] = (1.0, 1.0),
    theta_init: tuple[float, float] | list[float] = (-4.0, -4.0),
    schedule: str = "linear",
    inner_optimizer: str = "sgd",
    weight_decay: float = 0.0,
) -> Task:
    """Build the task.

    Args:
      horizon: T, inner SGD steps per training run (paper: 100).
      x_init: the inner starting point x_0 (paper: (1, 1)).
      theta_init: initial schedule parameters (paper Gen-2: (-4, -4)); their number must
        match the schedule's.
      schedule: a global schedule of `pes.hyperopt.SCHEDULES` (paper: ``linear``).
      inner_optimizer: ``sgd`` (paper), ``sgdm`` or ``adam``.
      weight_decay: L2 coefficient added to the gradient (Gen-2 uses 1e-10, negligible).
    """
    _check(
        "horizon",
        horizon,
        isinstance(horizon, int) and not isinstance(horizon, bool) and horizon >= 1,
        "an integer >= 1",
    )
    x_init = list(x_init)
    _check("x_init", x_init, len(x_init) == 2, "two numbers")
    if schedule.endswith("-pl"):
        raise ValueError(
            f"task 'toy_regression': schedule={schedule!r} is invalid; allowed: a global schedule "
            f"({', '.join(sorted(hyperopt.SCHEDULES))}); the inner model has a single tensor"
        )
    theta0 = hyperopt.init_schedule_params(schedule, list(theta_init))  # checks name and length
    optimizer = hyperopt.inner_optimizer(inner_optimizer, weight_decay=weight_decay)

    def init_params(key):
        del key
        return jnp.asarray(x_init, jnp.result_type(float))

    def train_loss(x, batch):
        del batch
        return toy_loss(x)

    def meta_objective(x, key):
        del key
        return toy_loss(x)

    system = hyperopt.training_system(
        init_params=init_params,
        train_loss=train_loss,
        sample_batch=lambda key: None,
        optimizer=optimizer,
        learning_rate=lambda theta, t: hyperopt.schedule_value(schedule, theta, t, horizon),
        meta_objective=meta_objective,
        horizon=horizon,
    )

    def evaluate(theta, key):
        # Deterministic: the keys are unused by the system.
        return {"meta_objective": full_objective(system, theta, key, key)}

    metadata = {"theta_labels": ("Initial Log-LR", "Final Log-LR") if schedule == "linear" else None}
    return Task("toy_regression", system, theta0, evaluate, metadata, objective="meta_objective")


__all__ = ["make", "toy_loss"]
