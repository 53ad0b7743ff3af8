"""Paper tasks as `Task` objects: an unrolled system, an initial theta and an evaluation.

``make(name, **params)`` builds a task by name.  Each task module exposes
``make(**params) -> Task``; its keyword arguments are the task's config keys.

The task contract
-----------------
Everything the experiment layer uses from a task is a typed field of `Task`, checked when
the task is built (a wrong type is a one-line `TaskContractError` there, not a failure
after a long run); a consumer that needs an optional field asks for it with
`Task.require`, which names the task, the field and the consumer in one line.
``metadata`` holds only static labels and scalars (strings, numbers, booleans, None and
flat lists of them) for tables and plots; it may not repeat a field's name.

Optional fields (keyword-only, default None unless stated):

============== ==================================================================
differentiable whether the meta-objective may be differentiated (default True;
               False refuses TBPTT/RTRL/UORO)
objective      name of the meta-objective the system optimises (a label)
cost_metric    name of the metric logged as outer steps x the estimator's cost per
               estimate (e.g. ``env_steps`` for control tasks)
optimum        the known optimal theta, if any
dataset        `DatasetInfo`: the dataset actually loaded and where it came from
full_run       ``full_run(theta, key) -> dict of scalars``: one fresh full-horizon
               inner training (grids and final evaluations average it)
eval_keys      fixed PRNG keys (1-D key array) of the task's evaluation runs
inner_curve    ``inner_curve(theta, key) -> (T,) losses``: one fresh inner run
baseline_curve ``baseline_curve(optax optimizer, key) -> (T,) losses``: the same
               inner run trained by a hand-designed optimizer
system_data    `SystemData`: the system as a function of a data array, so one
               compilation serves several data arrays (the variance study)
search_space   ``(low, high)``: two pytrees shaped like ``theta_init``, the box in
               theta's (unconstrained) space that random search samples uniformly
============== ==================================================================
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

from pes.systems import UnrolledSystem

PyTree = Any
LABEL_TYPES = (str, bool, int, float, type(None))


class TaskContractError(ValueError):
    """A task was built with a field of the wrong type, or lacks a field a consumer needs."""


class DatasetInfo(NamedTuple):
    """The dataset a task loaded: its name (e.g. ``fashion_mnist``), its origin (a path,
    ``tfds``, ...) and the number of training examples, if known."""

    name: str
    origin: str
    num_train: int | None = None


class SystemData(NamedTuple):
    """A task's system rebuilt from its data array: ``build(data)`` works on traced data."""

    data: np.ndarray
    build: Callable[[jax.Array], UnrolledSystem]


def _is_label(value) -> bool:
    if isinstance(value, (list, tuple)):
        return all(isinstance(v, LABEL_TYPES) for v in value)
    return isinstance(value, LABEL_TYPES)


def _is_key_array(value) -> bool:
    return (
        isinstance(value, jax.Array)
        and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key)
        and value.ndim == 1
        and value.shape[0] >= 1
    )


def _is_dataset(value) -> bool:
    return (
        isinstance(value, DatasetInfo)
        and isinstance(value.name, str)
        and isinstance(value.origin, str)
        and (
            value.num_train is None
            or (isinstance(value.num_train, int) and not isinstance(value.num_train, bool))
        )
    )


def _is_box(value) -> bool:
    if not (isinstance(value, tuple) and len(value) == 2):
        return False
    low, high = value
    if jax.tree.structure(low) != jax.tree.structure(high):
        return False
    return all(np.shape(lo) == np.shape(hi) for lo, hi in zip(jax.tree.leaves(low), jax.tree.leaves(high)))


def _is_system_data(value) -> bool:
    return isinstance(value, SystemData) and isinstance(value.data, np.ndarray) and callable(value.build)


# field -> (check of a value that is not None, what is allowed); None is always allowed
# for the optional fields except `differentiable`.
FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "differentiable": (lambda v: isinstance(v, bool), "True or False"),
    "objective": (lambda v: isinstance(v, str) and bool(v), "a metric name or None"),
    "cost_metric": (lambda v: isinstance(v, str) and bool(v), "a metric name or None"),
    "optimum": (lambda v: True, "a pytree or None"),
    "dataset": (_is_dataset, "pes.tasks.DatasetInfo(name: str, origin: str, num_train: int | None) or None"),
    "full_run": (callable, "a function (theta, key) -> dict of scalars, or None"),
    "eval_keys": (_is_key_array, "a non-empty 1-D array of typed PRNG keys, or None"),
    "inner_curve": (callable, "a function (theta, key) -> (T,) losses, or None"),
    "baseline_curve": (callable, "a function (optax optimizer, key) -> (T,) losses, or None"),
    "system_data": (_is_system_data, "pes.tasks.SystemData(data: np.ndarray, build: callable) or None"),
    "search_space": (_is_box, "a pair (low, high) of pytrees with the same structure and shapes, or None"),
}


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """An experiment's inner problem.

    Attributes:
      name: registry name.
      system: the `UnrolledSystem` the estimators work on.
      theta_init: the initial outer parameters (a pytree).
      evaluate: ``evaluate(theta, key) -> dict[str, scalar]``, the task's logged metrics
        (for example the paper's long-unroll loss); pure and jit-compatible.
      metadata: static labels and scalars for plots and tables (axis labels, sizes, ...).
      The keyword-only fields below are the task contract (see the module docstring).
    """

    name: str
    system: UnrolledSystem
    theta_init: PyTree
    evaluate: Callable[[PyTree, jax.Array], dict]
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    _: dataclasses.KW_ONLY
    differentiable: bool = True
    objective: str | None = None
    cost_metric: str | None = None
    optimum: PyTree | None = None
    dataset: DatasetInfo | None = None
    full_run: Callable[[PyTree, jax.Array], dict] | None = None
    eval_keys: jax.Array | None = None
    inner_curve: Callable[[PyTree, jax.Array], jax.Array] | None = None
    baseline_curve: Callable[[Any, jax.Array], jax.Array] | None = None
    system_data: SystemData | None = None
    search_space: tuple[PyTree, PyTree] | None = None

    def __post_init__(self):
        check_contract(self)

    def require(self, *fields: str, by: str) -> None:
        """Raise a one-line `TaskContractError` unless every field in ``fields`` is set."""
        for name in fields:
            if name not in FIELDS:
                raise TaskContractError(f"{by} asks for task field {name!r}; allowed: {', '.join(FIELDS)}")
            if getattr(self, name) is None:
                what = FIELDS[name][1].removesuffix(", or None")
                raise TaskContractError(
                    f"task '{self.name}' does not provide {name} ({what}), which {by} needs"
                )

    def info(self) -> dict:
        """The task's static facts for run records: metadata, labels and the dataset."""
        out = dict(self.metadata)
        out.update(objective=self.objective, differentiable=self.differentiable, cost_metric=self.cost_metric)
        if self.dataset is not None:
            out.update(
                dataset=self.dataset.name, data_origin=self.dataset.origin, num_train=self.dataset.num_train
            )
        return out


def check_contract(task: Task) -> None:
    """Check every field of ``task``; raise a one-line `TaskContractError` on the first bad one."""

    def bad(name, value, allowed):
        text = " ".join(repr(value).split())  # one line, also for multi-line reprs
        text = text if len(text) <= 60 else text[:57] + "..."
        raise TaskContractError(f"task {task.name!r}: {name}={text} is invalid; allowed: {allowed}")

    if not isinstance(task.name, str) or not task.name:
        bad("name", task.name, "a non-empty string")
    if not isinstance(task.system, UnrolledSystem):
        bad("system", task.system, "a pes.systems.UnrolledSystem")
    if not callable(task.evaluate):
        bad("evaluate", task.evaluate, "a function (theta, key) -> dict of scalars")
    if not isinstance(task.metadata, Mapping):
        bad("metadata", task.metadata, "a dict of labels and scalars")
    for key, value in task.metadata.items():
        if key in FIELDS:
            raise TaskContractError(
                f"task {task.name!r}: metadata key {key!r} is a Task field; pass {key}=... to Task instead"
            )
        if not isinstance(key, str) or not _is_label(value):
            bad(f"metadata[{key!r}]", value, "a string, number, boolean, None or a flat list of them")
    for name, (ok, allowed) in FIELDS.items():
        value = getattr(task, name)
        if name == "differentiable" or value is not None:
            if not ok(value):
                bad(name, value, allowed)
    if task.search_space is not None and jax.tree.structure(task.search_space[0]) != jax.tree.structure(
        task.theta_init
    ):
        bad("search_space", task.search_space, "a (low, high) pair shaped like theta_init")


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


# name -> module (each exposes ``make``); a module is imported only when its task is built, so
# a task that needs an extra (flax, a dataset package, MuJoCo) costs nothing until it is used.
TASK_MODULES: dict[str, str] = {
    "influence_balancing": "pes.tasks.influence_balancing",
    "linear_control": "pes.tasks.linear_control",
    "linear_quadratic": "pes.tasks.linear_quadratic",
    "lopt_image_mlp": "pes.tasks.lopt_image_mlp",
    "lorenz": "pes.tasks.lorenz",
    "mlp_hparams": "pes.tasks.mlp_hparams",
    "mnist_lr_schedule": "pes.tasks.mnist_lr_schedule",
    "ptb_lstm": "pes.tasks.ptb_lstm",
    "swimmer": "pes.tasks.swimmer",
    "toy_regression": "pes.tasks.toy_regression",
    "uci_yacht": "pes.tasks.uci_yacht",
}


def _check_name(name: str) -> None:
    if name not in TASK_MODULES:
        raise ValueError(f"task={name!r} is unknown; allowed: {', '.join(sorted(TASK_MODULES))}")


def factory(name: str) -> Callable[..., Task]:
    """The ``make(**params) -> Task`` function of task ``name`` (imports its module)."""
    _check_name(name)
    return importlib.import_module(TASK_MODULES[name]).make


def names() -> list[str]:
    """The registered task names, sorted (imports no task module)."""
    return sorted(TASK_MODULES)


def param_names(name: str) -> list[str]:
    """The parameters (config keys) of task ``name``."""
    return list(inspect.signature(factory(name)).parameters)


def make(name: str, **params: Any) -> Task:
    """Build task ``name``; raise ``ValueError`` naming the bad value and what is allowed."""
    _check_name(name)
    allowed = param_names(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"task '{name}' has no parameter {', '.join(unknown)}; allowed: {', '.join(allowed)}"
        )
    return factory(name)(**params)


__all__ = [
    "DatasetInfo",
    "SystemData",
    "Task",
    "TaskContractError",
    "check_contract",
    "factory",
    "make",
    "names",
    "param_names",
]
