"""Unrolled computation graphs: the inner problem that every estimator works on.

An `UnrolledSystem` is a pair of pure functions plus static metadata:

* ``init(key) -> state``: a fresh inner state (an arbitrary pytree);
* ``step(theta, state, key) -> (new_state, loss)``: exactly one inner step and the
  scalar loss incurred by it;
* ``horizon``: the length T of the inner problem, or ``None`` for a never-ending one;
* ``unroll_loss``: ``"sum"`` (the objective of a truncation is the sum of its K step
  losses; the meta-objective is the sum of all T step losses) or ``"last"`` (the
  objective of a truncation is the loss of its final step, as in influence balancing).

Time bookkeeping (the step counter ``t`` and the reset at the horizon) belongs to the
estimators, not to the system, so a system never carries estimator fields.

Key discipline (shared by every estimator, which makes equivalence tests exact): an
unroll of ``num_steps`` steps driven by ``data_key`` uses
``jax.random.split(data_key, (num_steps, 2))``; step ``j`` calls ``step`` with the first
key of row ``j`` and, if the episode ends at step ``j``, re-initialises with
``init(second key of row j)``.  Every particle of an estimate sees the same keys
(common random numbers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

PyTree = Any
UNROLL_LOSSES = ("sum", "last")
"""The allowed ``UnrolledSystem.unroll_loss`` values."""


class UnrolledSystem(NamedTuple):
    """An inner problem: ``init``, one-step ``step``, horizon T and unroll-loss type."""

    init: Callable[[jax.Array], PyTree]
    step: Callable[[PyTree, PyTree, jax.Array], tuple[PyTree, jax.Array]]
    horizon: int | None
    unroll_loss: str = "sum"


def check_system(system: UnrolledSystem) -> None:
    """Raise ``ValueError`` if the static metadata of ``system`` is invalid."""
    if system.unroll_loss not in UNROLL_LOSSES:
        raise ValueError(
            f"unroll_loss={system.unroll_loss!r} is invalid; allowed: {', '.join(UNROLL_LOSSES)}"
        )
    if system.horizon is not None:
        if isinstance(system.horizon, bool) or not isinstance(system.horizon, int):
            raise ValueError(f"horizon={system.horizon!r} is invalid; allowed: a positive int or None")
        if system.horizon < 1:
            raise ValueError(f"horizon={system.horizon} is invalid; allowed: a positive int or None")


def tree_where(cond: jax.Array, on_true: PyTree, on_false: PyTree) -> PyTree:
    """Leafwise ``jnp.where`` with a scalar condition."""
    return jax.tree.map(lambda a, b: jnp.where(cond, a, b), on_true, on_false)


def step_keys(data_key: jax.Array, num_steps: int) -> jax.Array:
    """The ``(num_steps, 2)`` array of (step key, reset key) pairs of an unroll."""
    return jax.random.split(data_key, (num_steps, 2))


def unroll(
    system: UnrolledSystem,
    theta: PyTree,
    state: PyTree,
    t: jax.Array,
    data_key: jax.Array,
    num_steps: int,
) -> tuple[PyTree, jax.Array, jax.Array, jax.Array]:
    """Run ``num_steps`` inner steps with a fixed ``theta``, resetting at the horizon.

    Args:
      system: the inner problem.
      theta: outer parameters used for every step.
      state: inner state at the start of the unroll.
      t: int32 scalar, number of steps already taken in the current episode.
      data_key: key driving the unroll (see the module docstring).
      num_steps: static number of steps K.

    Returns:
      ``(state, t, losses, ends)``: the state and step counter after the unroll (already
      re-initialised if the episode ended on the last step), the ``(K,)`` step losses and
      the ``(K,)`` boolean flags "the episode ended after this step".
    """
    keys = step_keys(data_key, num_steps)

    def body(carry, key_pair):
        state, t = carry
        new_state, loss = system.step(theta, state, key_pair[0])
        t = t + 1
        if system.horizon is None:
            end = jnp.zeros((), bool)
        else:
            end = t >= system.horizon
            new_state = tree_where(end, system.init(key_pair[1]), new_state)
            t = jnp.where(end, jnp.zeros_like(t), t)
        return (new_state, t), (loss, end)

    (state, t), (losses, ends) = jax.lax.scan(body, (state, t), keys)
    return state, t, losses, ends


def step_weights(system: UnrolledSystem, num_steps: int, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """Per-step weights that turn step losses into the unroll objective."""
    if system.unroll_loss == "sum":
        return jnp.ones((num_steps,), dtype)
    return jnp.zeros((num_steps,), dtype).at[-1].set(1.0)


def unroll_objective(system: UnrolledSystem, losses: jax.Array, num_steps: int) -> jax.Array:
    """The objective of one truncation from its step losses (sum, or last loss)."""
    return losses @ step_weights(system, num_steps, losses.dtype)


def full_objective(
    system: UnrolledSystem,
    theta: PyTree,
    init_key: jax.Array,
    data_key: jax.Array,
    trunc_len: int | None = None,
) -> jax.Array:
    """The meta-objective L(theta) of one whole episode from ``init(init_key)``.

    For ``unroll_loss="sum"`` this is the sum of all T step losses.  For ``"last"`` it is
    the sum of the losses at the end of every truncation of length ``trunc_len`` (which
    must divide T).  Driven by ``data_key`` with the same key discipline as an estimator's
    unroll of length T, so ``jax.grad`` of it is the exact reference gradient.
    """
    if system.horizon is None:
        raise ValueError("full_objective needs a finite horizon; this system has horizon=None")
    horizon = system.horizon
    state = system.init(init_key)
    _, _, losses, _ = unroll(system, theta, state, jnp.zeros((), jnp.int32), data_key, horizon)
    if system.unroll_loss == "sum":
        return jnp.sum(losses)
    if trunc_len is None or horizon % trunc_len:
        raise ValueError(
            f"trunc_len={trunc_len} is invalid for a 'last'-loss objective with horizon {horizon}: "
            "it must divide the horizon"
        )
    return jnp.sum(losses.reshape(horizon // trunc_len, trunc_len)[:, -1])
