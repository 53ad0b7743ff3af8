"""Pieces shared by the estimators: the estimator container, validation, noise, flattening."""

from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from pes import systems

PyTree = Any


class GradientEstimator(NamedTuple):
    """A gradient estimator: a pair of pure functions closed over its hyperparameters.

    Attributes:
      init: ``init(key, theta) -> est_state``.
      estimate: ``estimate(key, theta, est_state) -> (grad, est_state, aux)``; ``grad`` has
        exactly theta's pytree structure, shapes and dtypes; ``aux`` is a dict of scalars
        that includes ``"loss"``, the mean unroll loss of the particles.
      name: registry name.
      hparams: the hyperparameters it was built with.
      steps_per_estimate: inner steps taken by one trajectory per call (the truncation
        length K), used to count "inner iterations" honestly on every method's x-axis.
      cost_per_estimate: inner steps evaluated per call over all particles (including the
        mean trajectory of truncated ES), for compute axes.
    """

    init: Callable[[jax.Array, PyTree], Any]
    estimate: Callable[[jax.Array, PyTree, Any], tuple[PyTree, Any, dict]]
    name: str
    hparams: dict
    steps_per_estimate: int
    cost_per_estimate: int


# ----------------------------------------------------------------------------- validation


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def check_trunc_len(name: str, system: systems.UnrolledSystem, trunc_len) -> None:
    systems.check_system(system)
    if not _is_int(trunc_len) or trunc_len < 1:
        raise ValueError(f"estimator '{name}': trunc_len={trunc_len!r} is invalid; allowed: an integer >= 1")
    if system.unroll_loss == "last" and system.horizon is not None and system.horizon % trunc_len:
        raise ValueError(
            f"estimator '{name}': trunc_len={trunc_len} is invalid for a system with "
            f"unroll_loss='last' and horizon={system.horizon}; allowed: a divisor of the horizon "
            "(a 'last' objective is only defined when truncations tile the episode)"
        )


def check_sigma(name: str, sigma) -> None:
    if (
        isinstance(sigma, bool)
        or not isinstance(sigma, numbers.Real)
        or not math.isfinite(sigma)
        or sigma <= 0
    ):
        raise ValueError(
            f"estimator '{name}': sigma={sigma!r} is invalid; allowed: a finite number > 0 "
            "(the standard deviation of the perturbations)"
        )


def check_bool(name: str, key: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"estimator '{name}': {key}={value!r} is invalid; allowed: true, false")


def check_particles(name: str, num_particles, antithetic) -> None:
    if not isinstance(antithetic, bool):
        raise ValueError(f"estimator '{name}': antithetic={antithetic!r} is invalid; allowed: true, false")
    if not _is_int(num_particles) or num_particles < 1:
        raise ValueError(
            f"estimator '{name}': num_particles={num_particles!r} is invalid; allowed: an integer >= 1"
        )
    if antithetic and num_particles % 2:
        raise ValueError(
            f"estimator '{name}': num_particles={num_particles} is invalid with antithetic=True; "
            "allowed: a positive even integer (it counts particles of both signs)"
        )


def check_stagger(name: str, system: systems.UnrolledSystem, stagger) -> None:
    if not isinstance(stagger, bool):
        raise ValueError(f"estimator '{name}': stagger={stagger!r} is invalid; allowed: true, false")
    if stagger and system.horizon is None:
        raise ValueError(
            f"estimator '{name}': stagger=True is invalid for a system with horizon=None; "
            "allowed: stagger=False (there is no episode to stagger)"
        )
    if stagger and system.unroll_loss == "last":
        raise ValueError(
            f"estimator '{name}': stagger=True is invalid for a system with unroll_loss='last'; "
            "allowed: stagger=False (a 'last' objective needs truncations aligned with episodes)"
        )


# ----------------------------------------------------------------------------- batched runs

_RUN_AXES: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("pes_run_axes", default=())


@contextlib.contextmanager
def batched_runs(axis_name: str):
    """While tracing under ``jax.vmap(..., axis_name=axis_name)`` over independent runs.

    Estimators skip work with ``lax.cond`` (for example the reset selection when no episode
    ends).  Under ``vmap`` a run-dependent condition turns the ``cond`` into a ``select``
    that computes both branches; inside this context such conditions are or-reduced over
    the runs (`any_over_runs`), so they stay branches: a branch runs if any run needs it,
    which is exact because each skipped branch is an identity for the runs that skip it.
    """
    token = _RUN_AXES.set(_RUN_AXES.get() + (axis_name,))
    try:
        yield
    finally:
        _RUN_AXES.reset(token)


def any_over_runs(pred: jax.Array) -> jax.Array:
    """``pred`` (a scalar bool), or-reduced over the runs of every enclosing `batched_runs`."""
    for name in _RUN_AXES.get():
        pred = jax.lax.psum(pred.astype(jnp.int32), name) > 0
    return pred


# ----------------------------------------------------------------------------- particles


class ParticleLayout(NamedTuple):
    """N particles arranged as ``num_groups`` noise groups of ``group_size`` members.

    With antithetic sampling a group is a (+eps, -eps) pair; otherwise a single particle.
    Members of a group share their noise draw, their step counter and every random key.
    """

    num_groups: int
    group_size: int

    @property
    def num_particles(self) -> int:
        return self.num_groups * self.group_size

    def signs(self, dtype) -> jax.Array:
        return jnp.array([1.0, -1.0][: self.group_size], dtype)


def layout(num_particles: int, antithetic: bool) -> ParticleLayout:
    size = 2 if antithetic else 1
    return ParticleLayout(num_particles // size, size)


def sample_noise(key: jax.Array, theta: PyTree, num_groups: int, sigma: float) -> PyTree:
    """Gaussian perturbations eps ~ N(0, sigma^2 I), one per group, leaf by leaf over theta."""
    leaves, treedef = jax.tree.flatten(theta)
    keys = jax.random.split(key, len(leaves))
    noise = [
        sigma * jax.random.normal(k, (num_groups,) + jnp.shape(x), jnp.result_type(x))
        for k, x in zip(keys, leaves)
    ]
    return jax.tree.unflatten(treedef, noise)


def perturb(theta: PyTree, eps: PyTree, lay: ParticleLayout) -> PyTree:
    """theta + sign * eps for every member: leaves of shape (G, M, *theta_leaf.shape)."""

    def leaf(th, e):
        signs = lay.signs(e.dtype).reshape((1, lay.group_size) + (1,) * (e.ndim - 1))
        return jnp.expand_dims(th, (0, 1)) + signs * e[:, None]

    return jax.tree.map(leaf, theta, eps)


def combine(coeffs: jax.Array, tree: PyTree, scale: float, like: PyTree) -> PyTree:
    """sum_g coeffs[g] * tree[g] * scale, cast to the dtypes of ``like``.

    Written as a multiply and a sum over g (one fused reduction), which XLA:CPU runs
    several times faster than a (G,) x (G, ...) dot for the small G x P shapes of ES.
    """

    def leaf(v, ref):
        c = coeffs.astype(v.dtype).reshape((-1,) + (1,) * (v.ndim - 1))
        return (jnp.sum(c * v, axis=0) * scale).astype(jnp.result_type(ref))

    return jax.tree.map(leaf, tree, like)


def combine2(
    c1: jax.Array, tree1: PyTree, c2: jax.Array, tree2: PyTree, scale: float, like: PyTree
) -> PyTree:
    """sum_g (c1[g] * tree1[g] + c2[g] * tree2[g]) * scale as one fused reduction per leaf."""

    def leaf(a, b, ref):
        shape = (-1,) + (1,) * (a.ndim - 1)
        terms = c1.astype(a.dtype).reshape(shape) * a + c2.astype(a.dtype).reshape(shape) * b
        return (jnp.sum(terms, axis=0) * scale).astype(jnp.result_type(ref))

    return jax.tree.map(leaf, tree1, tree2, like)


def group_where(mask: jax.Array, on_true: PyTree, on_false: PyTree) -> PyTree:
    """Leafwise ``where`` with one boolean per group (``mask`` (G,)) over leaves (G, ...)."""
    return jax.tree.map(
        lambda a, b: jnp.where(mask.reshape((-1,) + (1,) * (jnp.ndim(a) - 1)), a, b), on_true, on_false
    )


def zeros_per_group(theta: PyTree, num_groups: int) -> PyTree:
    """theta's tree of zeros with a leading group axis (an empty accumulator)."""
    return jax.tree.map(lambda x: jnp.zeros((num_groups,) + jnp.shape(x), jnp.result_type(x)), theta)


def scale_hparams(hparams: dict, particle_chunk_size, devices) -> dict:
    """Record the particle-scaling options in ``hparams`` when they are set."""
    if particle_chunk_size is not None:
        hparams["particle_chunk_size"] = particle_chunk_size
    if devices is not None:
        hparams["devices"] = devices
    return hparams


def std_scale(objectives: jax.Array, sigma: float) -> jax.Array:
    """The factor that turns an ES/PES estimate into its ARS-style reward-std-scaled form.

    With ``divide_by_variance`` (the flag of the paper's control code, which divides by the
    standard deviation, not the variance) the estimate becomes

        g = sum_k L_k u_k / (P/2 * std(L)),

    where the sum runs over the P particles, L_k is particle k's unroll objective, u_k
    its unit-noise direction (its accumulated unit noise for PES) and std(L) the
    population standard deviation of the P unroll objectives of this estimate.  That is
    ARS V1's update direction (Mania et al. 2018) without top-b selection.  Relative to
    the plain estimate sum_k L_k sigma u_k / (P sigma^2) it is a factor 2 sigma / std(L).
    If every particle scored the same the plain estimate is zero and so is this one.
    """
    std = jnp.std(objectives)
    safe = jnp.where(std > 0, std, jnp.ones_like(std))
    return 2.0 * sigma / safe


def scale_tree(tree: PyTree, factor: jax.Array) -> PyTree:
    """Every leaf times ``factor``, in the leaf's dtype."""
    return jax.tree.map(lambda g: (g * factor).astype(g.dtype), tree)


def broadcast_state(state: PyTree, shape: tuple[int, ...]) -> PyTree:
    """Copy one inner state into every particle slot (leading axes ``shape``)."""
    return jax.tree.map(lambda x: jnp.broadcast_to(x, shape + jnp.shape(x)), state)


def split_key(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(noise key, data key) of one estimate; the data key drives the unroll."""
    noise_key, data_key = jax.random.split(key)
    return noise_key, data_key


# ----------------------------------------------------------------------------- flat views
# RTRL and UORO need the inner state and theta as flat vectors.  Integer leaves of the
# state (step counters of a learning-rate schedule, say) are carried along but are not
# differentiated.


class FlatStep(NamedTuple):
    theta_flat: jax.Array
    unravel_theta: Callable
    to_flat: Callable  # state -> (float vector, other leaves)
    from_flat: Callable  # (float vector, other leaves) -> state
    step: Callable  # (theta_flat, s_flat, other, key) -> ((new_s_flat, loss), new_other)


def flat_step(system: systems.UnrolledSystem, theta: PyTree, state: PyTree) -> FlatStep:
    theta_flat, unravel_theta = ravel_pytree(theta)
    leaves, treedef = jax.tree.flatten(state)
    is_float = [jnp.issubdtype(jnp.result_type(x), jnp.inexact) for x in leaves]
    if not any(is_float):
        raise ValueError("the inner state has no floating-point leaves to differentiate")
    _, unravel_state = ravel_pytree([x for x, f in zip(leaves, is_float) if f])

    def to_flat(state):
        leaves = jax.tree.leaves(state)
        s_flat, _ = ravel_pytree([x for x, f in zip(leaves, is_float) if f])
        other = [x for x, f in zip(leaves, is_float) if not f]
        return s_flat, other

    def from_flat(s_flat, other):
        floats = iter(unravel_state(s_flat))
        others = iter(other)
        return jax.tree.unflatten(treedef, [next(floats) if f else next(others) for f in is_float])

    def step(th_flat, s_flat, other, key):
        new_state, loss = system.step(unravel_theta(th_flat), from_flat(s_flat, other), key)
        new_s, new_other = to_flat(new_state)
        return (new_s, loss), new_other

    return FlatStep(theta_flat, unravel_theta, to_flat, from_flat, step)
