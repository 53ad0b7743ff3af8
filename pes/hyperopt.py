"""Hyperparameter optimisation through unrolled training: reusable building blocks.

A training run of an inner model is an `UnrolledSystem` whose state is the inner training
state and whose per-step loss is a chosen meta-objective; theta holds the
hyperparameters in an unconstrained space (log learning rates, ...).  Pieces:

* learning-rate schedules as pure functions of (schedule parameters, step, horizon);
* inner optimizers as optax transformations giving an update *direction*; the
  (hyperparameter-dependent) learning rate multiplies it, globally or per tensor;
* `training_system`, which assembles model loss + data sampler + optimizer + schedule +
  meta-objective into an `UnrolledSystem`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from pes.systems import UnrolledSystem

PyTree = Any


# ----------------------------------------------------------------------------- schedules


def linear_schedule(params: jax.Array, t: jax.Array, horizon: int) -> jax.Array:
    """lr_t = exp(p0) (T - t)/T + exp(p1) t/T: linear between log-space endpoints."""
    frac = t / horizon
    return jnp.exp(params[0]) * (1.0 - frac) + jnp.exp(params[1]) * frac


def inverse_time_decay_schedule(params: jax.Array, t: jax.Array, horizon: int) -> jax.Array:
    """lr_t = exp(p0) / (1 + t/T)^exp(p1): p0 = ln initial LR, p1 = ln decay exponent."""
    return jnp.exp(params[0]) / (1.0 + t / horizon) ** jnp.exp(params[1])


def fixed_schedule(params: jax.Array, t: jax.Array, horizon: int) -> jax.Array:
    """lr_t = exp(p0): a constant learning rate in log space."""
    del t, horizon
    return jnp.exp(params[0])


class Schedule(NamedTuple):
    name: str
    num_params: int
    fn: Callable[[jax.Array, jax.Array, int], jax.Array]


SCHEDULES = {
    "linear": Schedule("linear", 2, linear_schedule),
    "inverse-time-decay": Schedule("inverse-time-decay", 2, inverse_time_decay_schedule),
    "fixed": Schedule("fixed", 1, fixed_schedule),
}


def get_schedule(name: str) -> Schedule:
    """A schedule by name; ``<name>-pl`` names the per-parameter-tensor variant."""
    base = name[:-3] if name.endswith("-pl") else name
    if base not in SCHEDULES:
        allowed = sorted(SCHEDULES) + [f"{n}-pl" for n in sorted(SCHEDULES)]
        raise ValueError(f"schedule={name!r} is unknown; allowed: {', '.join(allowed)}")
    return SCHEDULES[base]


def schedule_value(name: str, theta_lr: PyTree, t: jax.Array, horizon: int) -> PyTree:
    """The learning rate at step t.

    For a global schedule ``theta_lr`` is a vector of ``num_params`` entries and the
    result a scalar.  For ``<name>-pl`` it is a pytree shaped like the model's parameters
    whose leaves are vectors of ``num_params`` entries, and the result has one learning
    rate per parameter tensor (same tree).
    """
    sched = get_schedule(name)
    t = jnp.asarray(t, jnp.result_type(float))
    if name.endswith("-pl"):
        return jax.tree.map(lambda p: sched.fn(p, t, horizon), theta_lr)
    return sched.fn(theta_lr, t, horizon)


def init_schedule_params(name: str, values: list[float], param_tree: PyTree | None = None) -> PyTree:
    """Initial theta for a schedule: ``values`` (unconstrained) globally or per tensor."""
    sched = get_schedule(name)
    if len(values) != sched.num_params:
        raise ValueError(
            f"schedule {name!r} takes {sched.num_params} parameters; got {len(values)}: {values}"
        )
    vec = jnp.asarray(values, jnp.result_type(float))
    if name.endswith("-pl"):
        if param_tree is None:
            raise ValueError(f"schedule {name!r} is per tensor and needs the model's parameter tree")
        return jax.tree.map(lambda _: vec, param_tree)
    return vec


# ----------------------------------------------------------------------------- optimizers


INNER_OPTIMIZERS = ("sgd", "sgdm", "adam")


def inner_optimizer(
    name: str,
    *,
    momentum: float = 0.9,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """An optax transformation producing the update *direction* (to be scaled by -lr).

    * ``sgd``: the gradient;
    * ``sgdm``: PyTorch-style momentum, buf <- momentum * buf + g (no dampening);
    * ``adam``: Adam's normalised first moment.
    ``weight_decay`` adds ``weight_decay * params`` to the gradient first (as in PyTorch).
    """
    if name == "sgd":
        direction = optax.identity()
    elif name == "sgdm":
        direction = optax.trace(decay=momentum, nesterov=False)
    elif name == "adam":
        direction = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)
    else:
        raise ValueError(f"inner_optimizer={name!r} is unknown; allowed: {', '.join(INNER_OPTIMIZERS)}")
    if weight_decay:
        return optax.chain(optax.add_decayed_weights(weight_decay), direction)
    return direction


def apply_lr(params: PyTree, direction: PyTree, lr: PyTree) -> PyTree:
    """params - lr * direction, with a scalar lr or one lr per parameter tensor."""
    if jax.tree.structure(lr) == jax.tree.structure(params):
        return jax.tree.map(lambda p, d, r: p - (r * d).astype(p.dtype), params, direction, lr)
    if jnp.ndim(lr) != 0:
        raise ValueError("lr must be a scalar or a tree with one value per parameter tensor")
    return jax.tree.map(lambda p, d: p - (lr * d).astype(p.dtype), params, direction)


# ----------------------------------------------------------------------------- system


class TrainingState(NamedTuple):
    """The inner training state: model parameters, optimizer state, step counter."""

    params: PyTree
    opt_state: PyTree
    t: jax.Array


def training_system(
    *,
    init_params: Callable[[jax.Array], PyTree],
    train_loss: Callable[[PyTree, Any], jax.Array],
    sample_batch: Callable[[jax.Array], Any],
    optimizer: optax.GradientTransformation,
    learning_rate: Callable[[PyTree, jax.Array], PyTree],
    meta_objective: Callable[[PyTree, jax.Array], jax.Array],
    horizon: int,
) -> UnrolledSystem:
    """A training run as an `UnrolledSystem`.

    One inner step: draw a minibatch with the step key, take the gradient of
    ``train_loss``, update with ``optimizer``'s direction scaled by
    ``learning_rate(theta, t)``, then report ``meta_objective(new_params, key)`` (training
    loss on a fresh batch, validation loss, negative accuracy, ...).  A reset draws fresh
    model parameters with the reset key.

    Args:
      init_params: key -> model parameters.
      train_loss: (params, batch) -> scalar training loss that is differentiated.
      sample_batch: key -> batch.
      optimizer: direction transform (see `inner_optimizer`).
      learning_rate: (theta, t) -> scalar lr or one lr per parameter tensor.
      meta_objective: (params after the step, key) -> the step's meta-loss.
      horizon: T, the length of a training run.
    """

    def init(key):
        params = init_params(key)
        return TrainingState(params, optimizer.init(params), jnp.zeros((), jnp.int32))

    def step(theta, state, key):
        batch_key, objective_key = jax.random.split(key)
        grads = jax.grad(train_loss)(state.params, sample_batch(batch_key))
        direction, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = apply_lr(state.params, direction, learning_rate(theta, state.t))
        return TrainingState(params, opt_state, state.t + 1), meta_objective(params, objective_key)

    return UnrolledSystem(init=init, step=step, horizon=horizon, unroll_loss="sum")
