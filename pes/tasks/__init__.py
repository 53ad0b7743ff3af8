"""Paper tasks as `Task` objects: an unrolled system, an initial theta and an evaluation.

``make(name, **params)`` builds a task by name.  Each task module exposes
``make(**params) -> Task``; its keyword arguments are the task's config keys.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from pes.systems import UnrolledSystem

PyTree = Any


class Task(NamedTuple):
    """An experiment's inner problem.

    Attributes:
      name: registry name.
      system: the `UnrolledSystem` the estimators work on.
      theta_init: the initial outer parameters (a pytree).
      evaluate: ``evaluate(theta, key) -> dict[str, scalar]``, the task's logged metrics
        (for example the paper's long-unroll loss); pure and jit-compatible.
      metadata: static facts plots and tables need (optimum, axis labels, ...).
    """

    name: str
    system: UnrolledSystem
    theta_init: PyTree
    evaluate: Callable[[PyTree, jax.Array], dict]
    metadata: dict


def check_param(task: str, name: str, value, ok: bool, allowed: str) -> None:
    """Raise the one-line ``ValueError`` every task uses for a bad parameter."""
    if not ok:
        raise ValueError(f"task '{task}': {name}={value!r} is invalid; allowed: {allowed}")


def check_ints(task: str, minimum: int, **values) -> None:
    """Each value must be an integer >= ``minimum`` (bools rejected)."""
    for name, value in values.items():
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
        check_param(task, name, value, ok, f"an integer >= {minimum}")


def check_widths(task: str, name: str, widths) -> tuple[int, ...]:
    """A list of positive layer widths, returned as a tuple."""
    widths = tuple(widths)
    ok = all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in widths)
    check_param(task, name, list(widths), ok, "a list of positive integers")
    return widths


def _registry() -> dict[str, Callable[..., Task]]:
    from pes.tasks import (
        influence_balancing,
        linear_control,
        linear_quadratic,
        lopt_image_mlp,
        lorenz,
        mnist_lr_schedule,
        ptb_lstm,
        swimmer,
        toy_regression,
    )

    return {
        "influence_balancing": influence_balancing.make,
        "linear_quadratic": linear_quadratic.make,
        "lopt_image_mlp": lopt_image_mlp.make,
        "lorenz": lorenz.make,
        "mnist_lr_schedule": mnist_lr_schedule.make,
        "ptb_lstm": ptb_lstm.make,
        "toy_regression": toy_regression.make,
        "swimmer": swimmer.make,
        "linear_control": linear_control.make,
    }


def names() -> list[str]:
    return sorted(_registry())


def param_names(name: str) -> list[str]:
    return list(inspect.signature(_registry()[name]).parameters)


def make(name: str, **params) -> Task:
    """Build task ``name``; raise ``ValueError`` naming the bad value and what is allowed."""
    registry = _registry()
    if name not in registry:
        raise ValueError(f"task={name!r} is unknown; allowed: {', '.join(sorted(registry))}")
    allowed = param_names(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"task '{name}' has no parameter {', '.join(unknown)}; allowed: {', '.join(allowed)}"
        )
    return registry[name](**params)


__all__ = ["Task", "make", "names", "param_names"]
