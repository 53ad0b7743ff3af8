"""Evolution-strategies estimators: truncated / full-unroll ES and Persistent ES.

Both use Gaussian perturbations eps ~ N(0, sigma^2 I) of theta, antithetic pairs by
default, and common random numbers: every particle of an estimate sees the same data and
reset keys.  With N particles the estimate is

    g = 1 / (N sigma^2) * sum_i  sum_j  w_ij * loss_ij,

where loss_ij is the loss of particle i at step j of the truncation and w_ij the noise
that influenced it.  For truncated ES w_ij = eps_i (only the current truncation is
perturbed), which is biased for the whole-episode objective.  For PES (Vicol et al. 2021,
Algorithm 1) w_ij is the sum of every perturbation the particle's current episode has
seen, including this truncation's: accumulate, then estimate.  A group's members carry
opposite accumulators, so one accumulator per antithetic pair is stored.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from pes import systems
from pes.estimators import _common as C

PyTree = Any


def _unroll_particles(system, thetas, inner, t, data_key, trunc_len, *, shared_inner):
    """Unroll every particle K steps.  ``thetas`` has leading axes (G, M).

    ``t`` is one counter per group (shape (G,)) or a shared scalar.  With
    ``shared_inner`` all particles start from the one state ``inner``.
    Returns (inner (G, M, ...), t (G,), losses (G, M, K), ends (G, K)).
    """

    def one(theta, state, t):
        return systems.unroll(system, theta, state, t, data_key, trunc_len)

    state_axis = None if shared_inner else 0
    t_axis = None if jnp.ndim(t) == 0 else 0
    per_member = jax.vmap(one, in_axes=(0, state_axis, None))
    per_group = jax.vmap(per_member, in_axes=(0, state_axis, t_axis))
    new_inner, new_t, losses, ends = per_group(thetas, inner, t)
    # Members of a group share t, so their step counters and episode ends agree.
    return new_inner, new_t[:, 0], losses, ends[:, 0]


def _antithetic_differences(losses, lay, weights):
    """sum_m sign_m * w_j * loss_{g,m,j}: shape (G, K)."""
    signs = lay.signs(losses.dtype)
    return jnp.einsum("m,gmk,k->gk", signs, losses, weights.astype(losses.dtype))


class ESState(NamedTuple):
    """Truncated ES: the inner state(s) advanced with the unperturbed theta.

    With ``stagger=False`` one shared state (``t`` a scalar); with ``stagger=True`` one
    state per antithetic group (leaves with a leading G axis, ``t`` of shape (G,)).
    """

    inner: PyTree
    t: jax.Array


def es(
    system: systems.UnrolledSystem,
    *,
    trunc_len: int,
    sigma: float,
    num_particles: int,
    antithetic: bool = True,
    stagger: bool = False,
) -> C.GradientEstimator:
    """Truncated evolution strategies (paper Sec. 3; `es_grad` in the official code).

    All particles start each truncation from the shared state, unroll ``trunc_len`` steps
    with theta + eps, and the estimate is sum_i L_i eps_i / (N sigma^2).  The shared state
    is then advanced ``trunc_len`` steps with theta (same keys).  With ``trunc_len`` equal
    to the horizon this is full-unroll ES, which is unbiased; shorter truncations are
    biased because they ignore theta's effect on the state through earlier truncations.

    ``stagger=True`` (needs a finite horizon): every antithetic group keeps its own
    unperturbed state, started at a random step offset_g ~ U{0..T-1} of its episode by a
    burn-in unroll with theta (keys ``split(key, 3)`` of ``init``: state, offset, burn-in;
    burn-in step j uses ``step_keys(burn_key, T - 1)[j, 0]``).  Each truncation perturbs
    group g from its own state and then advances it with theta: the paper semantics of
    truncated ES with per-particle states (lopt_spec §3.3 ``tes``), so that particles do not
    reset in lockstep.  With one group it is the shared-state estimator.

    Args:
      system: the inner problem.
      trunc_len: truncation length K.
      sigma: standard deviation of the perturbations.
      num_particles: N, counting both members of every antithetic pair.
      antithetic: use (+eps, -eps) pairs.
      stagger: one state per group, started at random offsets within the episode.
    """
    C.check_trunc_len("es", system, trunc_len)
    C.check_sigma("es", sigma)
    C.check_particles("es", num_particles, antithetic)
    if not isinstance(stagger, bool):
        raise ValueError(f"estimator 'es': stagger={stagger!r} is invalid; allowed: true, false")
    if stagger and system.horizon is None:
        raise ValueError(
            "estimator 'es': stagger=True is invalid for a system with horizon=None; "
            "allowed: stagger=False (there is no episode to stagger)"
        )
    if stagger and system.unroll_loss == "last":
        raise ValueError(
            "estimator 'es': stagger=True is invalid for a system with unroll_loss='last'; "
            "allowed: stagger=False (a 'last' objective needs truncations aligned with episodes)"
        )
    lay = C.layout(num_particles, antithetic)
    scale = 1.0 / (num_particles * sigma**2)
    # When every truncation covers whole episodes the mean trajectory ends in a reset, so
    # advancing it is wasted work: re-initialise it directly with the same reset key.
    skip_mean = system.horizon is not None and trunc_len % system.horizon == 0 and not stagger

    def init(key, theta):
        if not stagger:
            return ESState(system.init(key), jnp.zeros((), jnp.int32))
        state_key, offset_key, burn_key = jax.random.split(key, 3)
        inner = C.broadcast_state(system.init(state_key), (lay.num_groups,))
        offsets = jax.random.randint(offset_key, (lay.num_groups,), 0, system.horizon, jnp.int32)
        if system.horizon > 1:
            keys = systems.step_keys(burn_key, system.horizon - 1)
            step = jax.vmap(system.step, in_axes=(None, 0, None))

            def body(inner, xs):
                j, key_pair = xs
                new_inner, _ = step(theta, inner, key_pair[0])
                active = j < offsets

                def pick(new, old):
                    return jnp.where(active.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)

                return jax.tree.map(pick, new_inner, inner), None

            inner, _ = jax.lax.scan(body, inner, (jnp.arange(system.horizon - 1), keys))
        return ESState(inner, offsets)

    def estimate(key, theta, state):
        noise_key, data_key = C.split_key(key)
        eps = C.sample_noise(noise_key, theta, lay.num_groups, sigma)
        thetas = C.perturb(theta, eps, lay)
        if stagger:  # each group's members start from the group's state
            starts = jax.tree.map(
                lambda x: jnp.broadcast_to(x[:, None], (x.shape[0], lay.group_size) + x.shape[1:]),
                state.inner,
            )
            _, _, losses, _ = _unroll_particles(
                system, thetas, starts, state.t, data_key, trunc_len, shared_inner=False
            )
        else:
            _, _, losses, _ = _unroll_particles(
                system, thetas, state.inner, state.t, data_key, trunc_len, shared_inner=True
            )
        weights = systems.step_weights(system, trunc_len, losses.dtype)
        diffs = _antithetic_differences(losses, lay, weights)
        grad = C.combine(jnp.sum(diffs, axis=1), eps, scale, theta)
        if stagger:
            advance = jax.vmap(
                lambda s, t: systems.unroll(system, theta, s, t, data_key, trunc_len)[:2], in_axes=(0, 0)
            )
            new_state = ESState(*advance(state.inner, state.t))
        elif skip_mean:
            reset_key = systems.step_keys(data_key, trunc_len)[-1, 1]
            new_state = ESState(system.init(reset_key), jnp.zeros((), jnp.int32))
        else:
            inner, t, _, _ = systems.unroll(system, theta, state.inner, state.t, data_key, trunc_len)
            new_state = ESState(inner, t)
        aux = {"loss": jnp.mean(losses @ weights)}
        return grad, new_state, aux

    mean_cost = lay.num_groups * trunc_len if stagger else (0 if skip_mean else trunc_len)
    cost = num_particles * trunc_len + mean_cost
    hparams = dict(
        trunc_len=trunc_len, sigma=sigma, num_particles=num_particles, antithetic=antithetic, stagger=stagger
    )
    return C.GradientEstimator(init, estimate, "es", hparams, trunc_len, cost)


class PESState(NamedTuple):
    """Persistent ES.

    Attributes:
      inner: per-particle inner states, leaves of shape (G, M, ...): the + and - members
        of a pair keep separate states.
      t: per-group step counters, shape (G,).
      accum: per-group perturbation accumulator xi, theta's tree with a leading G axis;
        member m carries sign_m * xi.
    """

    inner: PyTree
    t: jax.Array
    accum: PyTree


def pes(
    system: systems.UnrolledSystem,
    *,
    trunc_len: int,
    sigma: float,
    num_particles: int,
    antithetic: bool = True,
    stagger: bool = False,
) -> C.GradientEstimator:
    """Persistent evolution strategies (Vicol, Metz, Sohl-Dickstein, ICML 2021, Alg. 1).

    Each particle keeps its own inner state across truncations and an accumulator xi of
    every perturbation its current episode has seen.  Per truncation: draw eps, unroll K
    steps with theta + eps, set xi <- xi + eps, estimate sum_i L_i xi_i / (N sigma^2).

    Exactness details handled here:
      * an episode that ends inside a truncation (T not a multiple of K, or staggered
        particles): losses before the reset are weighted by the old accumulator plus eps,
        losses after it by eps alone, and the accumulator restarts from eps (or from 0 if
        the episode ended on the truncation's last step);
      * ``stagger=True``: each pair starts at a random step of its episode, reached by a
        burn-in unroll with its own perturbation (which seeds the accumulator), so that
        particles do not reset in lockstep and the estimator stays unbiased.

    Args:
      system: the inner problem.
      trunc_len: truncation length K.
      sigma: standard deviation of the perturbations.
      num_particles: N, counting both members of every antithetic pair.
      antithetic: use (+eps, -eps) pairs with separate inner states.
      stagger: start pairs at random offsets within the episode (needs a finite horizon).
    """
    C.check_trunc_len("pes", system, trunc_len)
    C.check_sigma("pes", sigma)
    C.check_particles("pes", num_particles, antithetic)
    if not isinstance(stagger, bool):
        raise ValueError(f"estimator 'pes': stagger={stagger!r} is invalid; allowed: true, false")
    if stagger and system.horizon is None:
        raise ValueError(
            "estimator 'pes': stagger=True is invalid for a system with horizon=None; "
            "allowed: stagger=False (there is no episode to stagger)"
        )
    if stagger and system.unroll_loss == "last":
        raise ValueError(
            "estimator 'pes': stagger=True is invalid for a system with unroll_loss='last'; "
            "allowed: stagger=False (a 'last' objective needs truncations aligned with episodes)"
        )
    lay = C.layout(num_particles, antithetic)
    scale = 1.0 / (num_particles * sigma**2)

    def init(key, theta):
        state_key, offset_key, noise_key, burn_key = jax.random.split(key, 4)
        shape = (lay.num_groups, lay.group_size)
        inner = C.broadcast_state(system.init(state_key), shape)
        t = jnp.zeros((lay.num_groups,), jnp.int32)
        accum = jax.tree.map(lambda x: jnp.zeros((lay.num_groups,) + jnp.shape(x), jnp.result_type(x)), theta)
        if stagger and system.horizon > 1:
            inner, t, accum = _burn_in(theta, inner, offset_key, noise_key, burn_key)
        return PESState(inner, t, accum)

    def _burn_in(theta, inner, offset_key, noise_key, burn_key):
        """Advance group g by offset_g ~ U{0..T-1} steps with its own perturbation."""
        horizon = system.horizon
        offsets = jax.random.randint(offset_key, (lay.num_groups,), 0, horizon, jnp.int32)
        eps = C.sample_noise(noise_key, theta, lay.num_groups, sigma)
        thetas = C.perturb(theta, eps, lay)
        keys = systems.step_keys(burn_key, horizon - 1)

        def body(inner, xs):
            j, key_pair = xs
            step = jax.vmap(jax.vmap(system.step, in_axes=(0, 0, None)), in_axes=(0, 0, None))
            new_inner, _ = step(thetas, inner, key_pair[0])
            active = j < offsets

            def pick(new, old):
                mask = active.reshape((-1,) + (1,) * (new.ndim - 1))
                return jnp.where(mask, new, old)

            return jax.tree.map(pick, new_inner, inner), None

        inner, _ = jax.lax.scan(body, inner, (jnp.arange(horizon - 1), keys))
        started = offsets > 0
        accum = jax.tree.map(
            lambda e: jnp.where(started.reshape((-1,) + (1,) * (e.ndim - 1)), e, jnp.zeros_like(e)),
            eps,
        )
        return inner, offsets, accum

    def estimate(key, theta, state):
        noise_key, data_key = C.split_key(key)
        eps = C.sample_noise(noise_key, theta, lay.num_groups, sigma)
        thetas = C.perturb(theta, eps, lay)
        inner, t, losses, ends = _unroll_particles(
            system, thetas, state.inner, state.t, data_key, trunc_len, shared_inner=False
        )
        weights = systems.step_weights(system, trunc_len, losses.dtype)
        diffs = _antithetic_differences(losses, lay, weights)  # (G, K)
        grad, accum = pes_update(diffs, ends, eps, state.accum, scale, theta)
        aux = {"loss": jnp.mean(losses @ weights)}
        return grad, PESState(inner, t, accum), aux

    hparams = dict(
        trunc_len=trunc_len,
        sigma=sigma,
        num_particles=num_particles,
        antithetic=antithetic,
        stagger=stagger,
    )
    return C.GradientEstimator(init, estimate, "pes", hparams, trunc_len, num_particles * trunc_len)


def pes_update(diffs, ends, eps, accum, scale, like):
    """The PES gradient and the new accumulators from one truncation's outcomes.

    Shared by every driver of PES (pure-JAX systems here, external simulators elsewhere),
    so the estimator's arithmetic exists once.

    Args:
      diffs: (G, K) weighted antithetic loss differences sum_m sign_m w_j loss_{g,m,j}
        (for non-antithetic groups, just the weighted losses).
      ends: (G, K) bool, the group's episode ended after step j.
      eps: this truncation's perturbations, theta's tree with a leading G axis.
      accum: the accumulators before this truncation (same structure as ``eps``).
      scale: 1 / (N sigma^2).
      like: theta, whose dtypes the gradient takes.

    Returns:
      (grad, new_accum).  Losses before a reset inside the truncation are weighted by
      accum + eps, losses after it by eps alone; the accumulator continues as accum + eps,
      restarts from eps after a mid-truncation reset, or from 0 if the episode ended on
      the truncation's last step.
    """
    ends_f = ends.astype(diffs.dtype)
    # restarted[g, j]: the episode of group g was reset before step j of this truncation.
    restarted = (jnp.cumsum(ends_f, axis=1) - ends_f) > 0
    coeff_eps = jnp.sum(diffs, axis=1)
    coeff_accum = jnp.sum(jnp.where(restarted, jnp.zeros_like(diffs), diffs), axis=1)
    grad = jax.tree.map(
        lambda g1, g2: g1 + g2,
        C.combine(coeff_eps, eps, scale, like),
        C.combine(coeff_accum, accum, scale, like),
    )
    any_end = jnp.any(ends, axis=1)
    last_end = ends[:, -1]

    def new_accum(xi, e):
        shape = (-1,) + (1,) * (e.ndim - 1)
        cont = jnp.where(any_end.reshape(shape), e, xi + e)
        return jnp.where(last_end.reshape(shape), jnp.zeros_like(e), cont)

    return grad, jax.tree.map(new_accum, accum, eps)
