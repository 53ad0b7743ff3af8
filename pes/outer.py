"""The outer optimisation loop, compiled in chunks.

``make_chunk`` returns one jitted function that runs ``num_logs * log_every`` outer steps
(estimate, optax update) as nested ``lax.scan``s and returns the metrics of every log
point.  A driver (``experiments.runner``) calls it repeatedly, writing rows, advancing a
progress bar and checkpointing between calls; nothing here loops in Python per step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from pes.estimators import GradientEstimator
from pes.estimators._common import batched_runs

RUN_AXIS = "runs"
"""The name of the vmapped axis of `make_batched_chunk` (one entry per run)."""
NONFINITE = ("skip", "zero")
"""What the outer loop may do with a non-finite estimate (``nonfinite=``)."""
NONFINITE_METRIC = "nonfinite_estimates"
"""The logged count of non-finite estimates per log interval."""

PyTree = Any
MAX_LOGGED_THETA = 16
"""θ with at most this many entries is logged entry by entry (`theta_metrics`), else its norm."""


class TrainState(NamedTuple):
    """Everything the outer loop carries; a pytree, so it checkpoints as arrays."""

    theta: PyTree
    opt_state: PyTree
    est_state: PyTree
    step: jax.Array  # number of outer steps taken
    key: jax.Array  # the run's key; step i uses fold_in(key, i)


def init_state(
    key: jax.Array,
    theta: PyTree,
    estimator: GradientEstimator,
    optimizer: optax.GradientTransformation,
) -> TrainState:
    """The outer loop's first state: θ, the optimizer's and the estimator's states, step 0."""
    est_key, run_key = jax.random.split(key)
    return TrainState(
        theta=theta,
        opt_state=optimizer.init(theta),
        est_state=estimator.init(est_key, theta),
        step=jnp.zeros((), jnp.int32),
        key=run_key,
    )


def theta_metrics(theta: PyTree) -> dict[str, jax.Array]:
    """theta entry by entry (``theta/0``, ...) when it is small, else its norm."""
    leaves = jax.tree.leaves(theta)
    size = sum(jnp.size(x) for x in leaves)
    if size > MAX_LOGGED_THETA:
        return {"theta_norm": optax.tree.norm(theta)}
    flat = jnp.concatenate([jnp.ravel(x) for x in leaves]) if leaves else jnp.zeros((0,))
    if size == 1:
        return {"theta": flat[0]}
    return {f"theta/{i}": flat[i] for i in range(size)}


def check_nonfinite(nonfinite: str | None) -> None:
    """Raise a one-line ``ValueError`` unless ``nonfinite`` is None, "skip" or "zero"."""
    if nonfinite is not None and nonfinite not in NONFINITE:
        raise ValueError(f"nonfinite={nonfinite!r} is invalid; allowed: null, {', '.join(NONFINITE)}")


def all_finite(tree: PyTree) -> jax.Array:
    """A scalar bool: every entry of every leaf is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def guard_nonfinite(mode: str, grad: PyTree, apply: Callable, old: PyTree) -> tuple[PyTree, jax.Array]:
    """``apply(grad)`` unless the estimate ``grad`` has a non-finite entry.

    Returns (the outer state ``apply`` returns, 1 if ``grad`` was non-finite else 0, int32).
    A non-finite estimate is skipped (``mode="skip"``: ``old``, the state before, is kept)
    or zeroed (``"zero"``: ``apply`` of a zero gradient, so the optimizer's own state, such
    as Adam's moments, still moves).
    """
    finite = all_finite(grad)
    if mode == "zero":
        new = apply(jax.tree.map(lambda g: jnp.where(finite, g, jnp.zeros_like(g)), grad))
    else:
        new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), apply(grad), old)
    return new, jnp.logical_not(finite).astype(jnp.int32)


def make_step(
    estimator: GradientEstimator, optimizer: optax.GradientTransformation, nonfinite: str | None = None
) -> Callable[[TrainState], tuple[TrainState, dict]]:
    """One outer step: estimate the gradient at theta, then apply the optax update.

    ``nonfinite``: None applies every estimate as it is; "skip" or "zero" guard against a
    non-finite estimate (`guard_nonfinite`) and count it in the aux value
    ``nonfinite_estimates``.  The estimator's state advances either way.
    """
    check_nonfinite(nonfinite)

    def apply(state, grad):
        updates, opt_state = optimizer.update(grad, state.opt_state, state.theta)
        return optax.apply_updates(state.theta, updates), opt_state

    def step(state: TrainState):
        key = jax.random.fold_in(state.key, state.step)
        grad, est_state, aux = estimator.estimate(key, state.theta, state.est_state)
        if nonfinite is None:
            theta, opt_state = apply(state, grad)
        else:
            old = (state.theta, state.opt_state)
            (theta, opt_state), bad = guard_nonfinite(nonfinite, grad, lambda g: apply(state, g), old)
            aux = dict(aux, **{NONFINITE_METRIC: bad})
        aux = dict(aux, grad_norm=optax.tree.norm(grad))
        return TrainState(theta, opt_state, est_state, state.step + 1, state.key), aux

    return step


def make_initial_metrics(
    evaluate: Callable[[PyTree, jax.Array], dict] | None = None,
) -> Callable[[TrainState], dict]:
    """A jitted ``metrics(state)`` for the log point before any outer step (outer_step 0).

    It holds theta and the task's evaluation (no estimator aux: nothing was estimated), each
    with a leading axis of length 1 like a chunk's metrics.
    """

    def metrics(state):
        out = dict(theta_metrics(state.theta))
        if evaluate is not None:
            eval_key = jax.random.fold_in(jax.random.fold_in(state.key, state.step), 1)
            out.update(evaluate(state.theta, eval_key))
        out["outer_step"] = state.step
        return jax.tree.map(lambda x: jnp.expand_dims(x, 0), out)

    return jax.jit(metrics)


class Logging(NamedTuple):
    """How a chunk logs: every ``log_every`` steps, ``num_logs`` times, with ``evaluate``."""

    log_every: int
    num_logs: int
    evaluate: Callable[[PyTree, jax.Array], dict] | None = None
    nonfinite: str | None = None


def make_chunk(
    estimator: GradientEstimator,
    optimizer: optax.GradientTransformation,
    *,
    log_every: int,
    num_logs: int,
    evaluate: Callable[[PyTree, jax.Array], dict] | None = None,
    nonfinite: str | None = None,
) -> Callable[[TrainState], tuple[TrainState, dict]]:
    """A jitted ``chunk(state) -> (state, metrics)`` running ``num_logs * log_every`` steps.

    ``metrics[name]`` has shape ``(num_logs,)``: the estimator's aux values averaged over
    the ``log_every`` steps before each log point, the gradient norm of the last step,
    theta (entry by entry when small) and ``evaluate(theta, key)`` at the log point.
    ``metrics["outer_step"]`` is the number of outer steps taken at each log point.

    ``nonfinite`` ("skip" or "zero", see `make_step`): non-finite estimates are not applied
    as they are; ``metrics["nonfinite_estimates"]`` counts them per log interval, and the
    aux values and the gradient norm are those of the interval's finite estimates (the
    mean, and the last one's norm; NaN when none was finite).
    """
    logging = Logging(log_every, num_logs, evaluate, nonfinite)
    return jax.jit(_chunk_fn(estimator, optimizer, logging))


def _interval_metrics(auxs: dict, nonfinite: str | None) -> dict:
    """One log interval's estimator metrics from its steps' stacked aux values."""
    if nonfinite is None:
        metrics = {k: jnp.mean(v) for k, v in auxs.items() if k != "grad_norm"}
        metrics["grad_norm"] = auxs["grad_norm"][-1]
        return metrics
    counts = auxs.pop(NONFINITE_METRIC)
    finite = counts == 0
    kept = jnp.sum(finite)
    metrics = {k: jnp.sum(jnp.where(finite, v, 0)) / kept for k, v in auxs.items() if k != "grad_norm"}
    last = jnp.max(jnp.where(finite, jnp.arange(finite.shape[0]), -1))
    nan = jnp.full_like(auxs["grad_norm"][0], jnp.nan)
    metrics["grad_norm"] = jnp.where(last >= 0, auxs["grad_norm"][jnp.maximum(last, 0)], nan)
    metrics[NONFINITE_METRIC] = jnp.sum(counts)
    return metrics


def _chunk_fn(estimator, optimizer, logging: Logging):
    """The (unjitted) function behind `make_chunk`."""
    log_every, num_logs, evaluate = logging.log_every, logging.num_logs, logging.evaluate
    if log_every < 1 or num_logs < 1:
        raise ValueError(f"log_every={log_every} and num_logs={num_logs} must both be >= 1")
    step = make_step(estimator, optimizer, logging.nonfinite)

    def log_point(state, _):
        state, auxs = jax.lax.scan(lambda s, _: step(s), state, None, length=log_every)
        metrics = _interval_metrics(dict(auxs), logging.nonfinite)
        metrics.update(theta_metrics(state.theta))
        if evaluate is not None:
            eval_key = jax.random.fold_in(jax.random.fold_in(state.key, state.step), 1)
            metrics.update(evaluate(state.theta, eval_key))
        metrics["outer_step"] = state.step
        return state, metrics

    def chunk(state):
        return jax.lax.scan(log_point, state, None, length=num_logs)

    return chunk


def init_states(
    keys: jax.Array,
    thetas: PyTree,
    estimator: GradientEstimator,
    optimizer: optax.GradientTransformation,
) -> TrainState:
    """`init_state` for R independent runs: ``keys`` (R,), ``thetas`` with a leading R axis."""
    return jax.vmap(lambda k, th: init_state(k, th, estimator, optimizer))(keys, thetas)


def make_batched_chunk(
    estimator: GradientEstimator, optimizer: optax.GradientTransformation, **logging: Any
) -> Callable[[TrainState], tuple[TrainState, dict]]:
    """`make_chunk` for R independent runs (seeds, initialisations) in one compiled call.

    Keyword arguments (``log_every``, ``num_logs``, ``evaluate``, ``nonfinite``) as
    `make_chunk`.  The runs are ``vmap``ped: each keeps its own theta, optimizer state,
    estimator state and key, and gets the same numbers as when run alone (up to the
    rounding of batched kernels).  States come from `init_states`; every metric gains a
    leading R axis.  On an accelerator this fills the device when one run's particles do
    not.  The estimators' work-skipping branches stay branches (taken when any run needs
    them; see `pes.estimators._common.batched_runs`) instead of turning into both-branch
    selects.
    """
    batched = jax.vmap(_chunk_fn(estimator, optimizer, Logging(**logging)), axis_name=RUN_AXIS)

    def chunk(states):
        with batched_runs(RUN_AXIS):
            return batched(states)

    return jax.jit(chunk)


def run(
    key: jax.Array,
    theta: PyTree,
    estimator: GradientEstimator,
    optimizer: optax.GradientTransformation,
    *,
    num_steps: int,
    log_every: int = 1,
    evaluate: Callable | None = None,
    nonfinite: str | None = None,
) -> tuple[TrainState, dict]:
    """Run ``num_steps`` outer steps in one compiled call (library use, no I/O).

    Returns the final `TrainState` and metrics stacked over ``num_steps // log_every``
    log points.  ``nonfinite``: see `make_chunk`.
    """
    if num_steps % log_every:
        raise ValueError(f"num_steps={num_steps} must be a multiple of log_every={log_every}")
    state = init_state(key, theta, estimator, optimizer)
    num_logs = num_steps // log_every
    chunk = make_chunk(
        estimator, optimizer, log_every=log_every, num_logs=num_logs, evaluate=evaluate, nonfinite=nonfinite
    )
    return chunk(state)
