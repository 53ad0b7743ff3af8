"""Hyperparameter optimisation through unrolled training: reusable building blocks.

A training run of an inner model is an `UnrolledSystem` whose state is the inner training
state and whose per-step loss is a chosen meta-objective; theta holds the
hyperparameters in an unconstrained space (log learning rates, ...).  Pieces:

* learning-rate schedules as pure functions of (schedule parameters, step, horizon);
* inner optimizers as optax transformations giving an update *direction*; the
  (hyperparameter-dependent) learning rate multiplies it, globally or per tensor;
  ``inner_optimizer("sgdm", tuned_momentum=True)`` takes the momentum coefficient(s) at
  every update (one per parameter tensor, from theta);
* per-tensor hyperparameter vectors (`tensor_names`, `vector_to_tree`): one entry of a
  theta vector per parameter tensor, in the order of ``jax.tree.leaves``;
* width masks (`width_mask`, `width_masks`): hidden units with index >= floor(p * width)
  are switched off; p is a discrete function of theta, so the masks are built on a
  gradient-free path and differentiating through them raises a `TypeError`;
* `training_system`, which assembles model loss + data sampler + optimizer + schedule +
  meta-objective (+ theta-dependent momentum and architecture) into an `UnrolledSystem`.
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
    """A learning-rate schedule: its name, number of parameters and ``fn(params, step, horizon)``."""

    name: str
    num_params: int
    fn: Callable[[jax.Array, jax.Array, int], jax.Array]


SCHEDULES = {
    "linear": Schedule("linear", 2, linear_schedule),
    "inverse-time-decay": Schedule("inverse-time-decay", 2, inverse_time_decay_schedule),
    "fixed": Schedule("fixed", 1, fixed_schedule),
}
"""The learning-rate schedules by name (`get_schedule`)."""


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
"""The inner optimizers `inner_optimizer` builds."""


class MomentumState(NamedTuple):
    """The momentum buffer of `tuned_momentum_direction`."""

    buf: PyTree


def tuned_momentum_direction() -> optax.GradientTransformationExtraArgs:
    """PyTorch-style momentum whose coefficient is given at every update.

    ``update(grads, state, params, momentum=m)`` computes buf <- m * buf + g and returns
    buf; ``m`` is a scalar or a tree with one coefficient per parameter tensor (the params'
    structure), so a hyperparameter optimiser can tune it (per tensor) through theta.
    """

    def init(params):
        return MomentumState(jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None, *, momentum):
        del params
        if jax.tree.structure(momentum) == jax.tree.structure(updates):
            buf = jax.tree.map(lambda m, b, g: (m * b).astype(b.dtype) + g, momentum, state.buf, updates)
        elif jnp.ndim(momentum) == 0:
            buf = jax.tree.map(lambda b, g: (momentum * b).astype(b.dtype) + g, state.buf, updates)
        else:
            raise ValueError("momentum must be a scalar or a tree with one value per parameter tensor")
        return buf, MomentumState(buf)

    return optax.GradientTransformationExtraArgs(init, update)


def inner_optimizer(
    name: str,
    *,
    momentum: float = 0.9,
    tuned_momentum: bool = False,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """An optax transformation producing the update *direction* (to be scaled by -lr).

    * ``sgd``: the gradient;
    * ``sgdm``: PyTorch-style momentum, buf <- momentum * buf + g (no dampening); with
      ``tuned_momentum=True`` the coefficient is not fixed but passed to every update as
      the extra argument ``momentum`` (see `tuned_momentum_direction`; `training_system`
      does this with its ``momentum`` function of theta);
    * ``adam``: Adam's normalised first moment.
    ``weight_decay`` adds ``weight_decay * params`` to the gradient first (as in PyTorch).
    """
    if tuned_momentum and name != "sgdm":
        raise ValueError(f"tuned_momentum needs inner_optimizer='sgdm'; got {name!r}")
    if name == "sgd":
        direction = optax.identity()
    elif name == "sgdm" and tuned_momentum:
        direction = tuned_momentum_direction()
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


# ----------------------------------------------------------------------------- per tensor


def tensor_names(params: PyTree) -> list[str]:
    """A readable name per parameter tensor (``Dense_0/kernel``), in ``jax.tree.leaves`` order."""
    names = []
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        parts = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
        names.append("/".join(p for p in parts if p != "params"))
    return names


def vector_to_tree(values: jax.Array, params: PyTree) -> PyTree:
    """One scalar per parameter tensor: ``values[i]`` goes to the i-th leaf of ``params``."""
    leaves, treedef = jax.tree.flatten(params)
    if jnp.shape(values) != (len(leaves),):
        raise ValueError(
            f"a per-tensor hyperparameter vector has shape {jnp.shape(values)}; the model has "
            f"{len(leaves)} parameter tensors"
        )
    return jax.tree.unflatten(treedef, [values[i] for i in range(len(leaves))])


# ----------------------------------------------------------------------------- width masks


def width_mask(fraction: jax.Array, width: int) -> jax.Array:
    """1.0 for the units with index < floor(fraction * width), 0.0 for the rest; shape (width,).

    Piecewise constant in ``fraction`` (zero gradient almost everywhere), so use it only on
    a gradient-free path (see `width_masks`).
    """
    active = jnp.floor(fraction * width).astype(jnp.int32)
    return (jnp.arange(width) < active).astype(jnp.result_type(float))


@jax.custom_jvp
def _discrete(x):
    return x


@_discrete.defjvp
def _refuse_jvp(primals, tangents):
    raise TypeError(
        "layer width fractions are discrete hyperparameters (units with index >= floor(p * width) "
        "are switched off): their gradient is zero almost everywhere and undefined at the jumps; "
        "tune them with es or pes (gradient-free), not tbptt/rtrl/uoro"
    )


def width_masks(fractions: jax.Array, widths: tuple[int, ...]) -> tuple[jax.Array, ...]:
    """One `width_mask` per hidden layer from a vector of fractions (one per layer).

    The masks are a discrete function of theta: ES and PES evaluate them without
    differentiating, and any attempt to differentiate through them (forward or reverse
    mode) raises a `TypeError` that says so, instead of silently giving a zero gradient.
    """
    fractions = _discrete(jnp.asarray(fractions))
    if fractions.shape != (len(widths),):
        raise ValueError(f"width fractions have shape {fractions.shape}; expected ({len(widths)},)")
    return tuple(width_mask(fractions[i], w) for i, w in enumerate(widths))


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
    momentum: Callable[[PyTree, jax.Array], PyTree] | None = None,
    architecture: Callable[[PyTree], Any] | None = None,
    sanitize_grads: bool = False,
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
      momentum: (theta, t) -> momentum coefficient(s), scalar or one per parameter tensor,
        passed to every ``optimizer.update`` as the extra argument ``momentum`` (use
        ``inner_optimizer("sgdm", tuned_momentum=True)``); None: the optimizer's own.
      architecture: theta -> architecture hyperparameters (e.g. `width_masks`); when given,
        ``train_loss(params, batch, arch)`` and ``meta_objective(params, key, arch)`` get
        them as a third argument (the same arch for the training step and the objective).
      sanitize_grads: replace NaN entries of the inner gradient by 0 and +-inf by the
        largest finite value before the update (as the paper's hyperparameter code does,
        so a wild configuration degrades instead of poisoning the state with NaN).
    """

    def init(key):
        params = init_params(key)
        return TrainingState(params, optimizer.init(params), jnp.zeros((), jnp.int32))

    def step(theta, state, key):
        batch_key, objective_key = jax.random.split(key)
        arch = () if architecture is None else (architecture(theta),)
        grads = jax.grad(train_loss)(state.params, sample_batch(batch_key), *arch)
        if sanitize_grads:
            grads = jax.tree.map(jnp.nan_to_num, grads)
        extra = {} if momentum is None else {"momentum": momentum(theta, state.t)}
        direction, opt_state = optimizer.update(grads, state.opt_state, state.params, **extra)
        params = apply_lr(state.params, direction, learning_rate(theta, state.t))
        return TrainingState(params, opt_state, state.t + 1), meta_objective(params, objective_key, *arch)

    return UnrolledSystem(init=init, step=step, horizon=horizon, unroll_loss="sum")
