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
from pes.sharding import ParticleSharding, resolve_devices

PyTree = Any


class Unrolled(NamedTuple):
    """What one truncation of every particle leaves behind (G groups of M members).

    Attributes:
      inner: the particles' inner states after the truncation, leaves (G, M, ...), or
        None when the caller does not keep them.
      t: the groups' step counters after the truncation, shape (G,).
      total: (G, M) the unroll objective, sum_j w_j loss_j over the K steps.
      before: (G, M) the part of ``total`` from the steps up to and including the first
        episode end of the truncation (all of ``total`` if no episode ends in it).
      any_end: (G,) an episode ended at some step of the truncation.
      last_end: (G,) an episode ended at the truncation's last step.
    """

    inner: Any
    t: jax.Array
    total: jax.Array
    before: jax.Array
    any_end: jax.Array
    last_end: jax.Array


def _unroll_particles(
    system,
    thetas,
    inner,
    t,
    data_key,
    trunc_len,
    *,
    shared_inner,
    skip_idle_resets=True,
    keep_state=True,
    thetas_after=None,
):
    """Unroll every particle K steps.  ``thetas`` has leading axes (G, M).

    ``t`` is one counter per group (shape (G,)) or a shared scalar.  With
    ``shared_inner`` all particles start from the one state ``inner``.  Returns an
    `Unrolled`.

    Per particle this is exactly `systems.unroll` (same keys, same resets), written as a
    scan over steps of one step vmapped over a flat (G * M) particle axis.  The scan
    carries running sums of the weighted losses instead of stacking K losses per particle,
    so memory does not grow with K.  Episode ends follow from the step counters alone
    (step j of a truncation that starts at t ends an episode when t + j + 1 is a multiple
    of the horizon).  With ``skip_idle_resets`` (one device) a truncation in which no
    episode ends before its last step (the usual case: K divides T and particles run in
    lockstep) is a scan of bare steps followed by one reset selection, chosen by one
    ``lax.cond`` per truncation; otherwise the scan selects fresh states at every step.
    A large state (>= 1 MiB over all particles) is selected only at steps where some
    episode ends (a ``lax.cond`` per step).  Sharded, each condition needs an all-reduce
    of one boolean, so sharded runs use the conditions for large states only; small
    states take the selecting scan, whose only collective is the gradient's sum.

    ``thetas_after`` (same layout as ``thetas``, optional): the parameters a particle uses
    after its first episode end inside this truncation (noise-reuse ES starts each episode
    with a new perturbation); by default ``thetas`` throughout.
    """
    groups, members = jax.tree.leaves(thetas)[0].shape[:2]
    num = groups * members

    def flat(x):
        return x.reshape((num,) + x.shape[2:])

    def unflat(x):
        return x.reshape((groups, members) + x.shape[1:])

    thetas = jax.tree.map(flat, thetas)
    if thetas_after is not None:
        thetas_after = jax.tree.map(flat, thetas_after)
    if shared_inner:
        inner = jax.tree.map(lambda x: jnp.broadcast_to(x, (num,) + jnp.shape(x)), inner)
    else:
        inner = jax.tree.map(flat, inner)
    t = jnp.asarray(t)
    step = jax.vmap(system.step, in_axes=(0, 0, None))
    keys = systems.step_keys(data_key, trunc_len)
    loss_dtype = jax.eval_shape(step, thetas, inner, keys[0, 0])[1].dtype
    weights = systems.step_weights(system, trunc_len, loss_dtype)
    zeros = jnp.zeros((num,), loss_dtype)
    horizon = system.horizon
    if horizon is None:
        new_t = t + trunc_len
        first_end = jnp.full(jnp.shape(t), trunc_len, t.dtype)  # never
        last_end = jnp.zeros(jnp.shape(t), bool)
    else:
        new_t = (t + trunc_len) % horizon
        first_end = horizon - 1 - t  # the step index of the first episode end
        last_end = new_t == 0
    any_end = first_end < trunc_len
    particle_t = t if jnp.ndim(t) == 0 else jnp.repeat(t, members)

    def reset(state, end, reset_key):
        fresh = system.init(reset_key)

        def pick(f, x):
            cond = jnp.reshape(end, (-1,) + (1,) * (x.ndim - 1)) if jnp.ndim(end) else end
            return jnp.where(cond, jnp.expand_dims(f, 0), x)

        return jax.tree.map(pick, fresh, state)

    # Selecting fresh states is a full pass over the states: for a large state, branch on
    # whether any episode ends instead (a small state is cheaper to select than to branch on).
    # Sharded, each condition costs an all-reduce of one boolean: worth it for large states only.
    large = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(inner)) >= 2**20
    branch = skip_idle_resets or large

    def maybe_reset(state, end, reset_key):
        if large:
            return jax.lax.cond(
                C.any_over_runs(jnp.any(end)), lambda s: reset(s, end, reset_key), lambda s: s, state
            )
        return reset(state, end, reset_key)

    def bare_steps(state):  # no episode ends before the last step
        def body(carry, xs):
            state, total = carry
            key_pair, w = xs
            state, loss = step(thetas, state, key_pair[0])
            return (state, total + w * loss), None

        (state, total), _ = jax.lax.scan(body, (state, zeros), (keys, weights))
        if horizon is not None and keep_state:
            end = last_end if jnp.ndim(t) == 0 else jnp.repeat(last_end, members)
            state = maybe_reset(state, end, keys[-1, 1])
        return (state if keep_state else None), total, total

    def resetting_steps(state):
        def body(carry, xs):
            state, tt, total, before, restarted = carry
            key_pair, w = xs
            th = thetas
            if thetas_after is not None:
                th = jax.tree.map(
                    lambda a, b: jnp.where(jnp.reshape(restarted, (-1,) + (1,) * (a.ndim - 1)), a, b),
                    thetas_after,
                    thetas,
                )
            state, loss = step(th, state, key_pair[0])
            total = total + w * loss
            before = jnp.where(restarted, before, before + w * loss)
            tt = tt + 1
            end = tt >= horizon
            tt = jnp.where(end, jnp.zeros_like(tt), tt)
            state = maybe_reset(state, end, key_pair[1])
            return (state, tt, total, before, restarted | end), None

        init = (state, particle_t, zeros, zeros, jnp.zeros(jnp.shape(particle_t), bool))
        (state, _, total, before, _), _ = jax.lax.scan(body, init, (keys, weights))
        return (
            (state if keep_state else None),
            jnp.broadcast_to(total, (num,)),
            jnp.broadcast_to(before, (num,)),
        )

    if horizon is None or trunc_len == 1:
        out = bare_steps(inner)
    elif branch:
        mid_end = C.any_over_runs(jnp.any(first_end < trunc_len - 1))
        out = jax.lax.cond(mid_end, resetting_steps, bare_steps, inner)
    else:
        out = resetting_steps(inner)
    inner, total, before = out

    def groupwise(x):  # shared (scalar) counters -> one per group
        return jnp.broadcast_to(x, (groups,))

    return Unrolled(
        None if inner is None else jax.tree.map(unflat, inner),
        groupwise(new_t),
        unflat(total),
        unflat(before),
        groupwise(any_end),
        groupwise(last_end),
    )


def _particle_plan(name, lay, particle_chunk_size, devices):
    """Validate chunking and sharding options: (number of chunks, `ParticleSharding`)."""
    shard = ParticleSharding(resolve_devices(name, devices))
    num_dev = shard.num_devices
    if lay.num_groups % num_dev:
        raise ValueError(
            f"estimator '{name}': devices={devices!r} ({num_dev} devices) is invalid with "
            f"{lay.num_groups} noise groups (num_particles={lay.num_particles}); allowed: a device "
            "count that divides the number of groups"
        )
    if particle_chunk_size is None:
        return 1, shard
    unit = lay.group_size * num_dev
    if (
        not C._is_int(particle_chunk_size)
        or particle_chunk_size < 1
        or particle_chunk_size % unit
        or lay.num_particles % particle_chunk_size
    ):
        raise ValueError(
            f"estimator '{name}': particle_chunk_size={particle_chunk_size!r} is invalid with "
            f"num_particles={lay.num_particles} on {num_dev} device(s); allowed: null or a divisor "
            f"of num_particles that is a multiple of {unit} (group size x devices)"
        )
    return lay.num_particles // particle_chunk_size, shard


def _unroll_groups(
    system,
    theta,
    eps,
    lay,
    inner,
    t,
    data_key,
    trunc_len,
    *,
    shared_inner,
    num_chunks,
    shard,
    keep_state=True,
    eps_after=None,
):
    """Perturb theta by ``eps`` (G groups) and unroll every particle K steps.

    With ``num_chunks`` > 1 the groups are processed ``G / num_chunks`` at a time by a
    ``lax.map`` inside the compiled estimate (chunk c holds groups c, c + C, c + 2C, ...,
    so a chunk spans every device when the group axis is sharded).  Each particle's unroll
    is the same computation either way, so results do not depend on the chunking; only the
    perturbed thetas and the unroll's working memory shrink to one chunk.  ``eps_after``
    (optional) perturbs the steps after a particle's first episode end in the truncation.
    Returns what `_unroll_particles` returns.
    """

    def run(eps, eps_after, inner, t):
        thetas = C.perturb(theta, eps, lay)
        return _unroll_particles(
            system,
            thetas,
            inner,
            t,
            data_key,
            trunc_len,
            shared_inner=shared_inner,
            skip_idle_resets=shard.mesh is None,
            keep_state=keep_state,
            thetas_after=None if eps_after is None else C.perturb(theta, eps_after, lay),
        )

    if num_chunks == 1:
        return shard.groups(run(eps, eps_after, inner, t))
    groups = lay.num_groups

    def split(x):  # (G, ...) -> (C, G / C, ...), chunk c = groups c, c + C, ...
        return jnp.swapaxes(x.reshape((groups // num_chunks, num_chunks) + x.shape[1:]), 0, 1)

    def merge(x):
        return jnp.swapaxes(x, 0, 1).reshape((groups,) + x.shape[2:])

    per_group = (eps, eps_after, None if shared_inner else inner, None if jnp.ndim(t) == 0 else t)
    xs = shard.groups(jax.tree.map(split, per_group), axis=1)

    def body(xs):
        e, ea, i, tt = shard.groups(xs)
        out = run(e, ea, inner if i is None else i, t if tt is None else tt)
        return shard.groups(out)

    out = jax.lax.map(body, xs)
    return shard.groups(jax.tree.map(merge, shard.groups(out, axis=1)))


def _antithetic_differences(x, lay):
    """sum_m sign_m * x[g, m]: the antithetic difference of each group, shape (G,)."""
    return x[:, 0] - x[:, 1] if lay.group_size == 2 else x[:, 0]


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
    divide_by_variance: bool = False,
    particle_chunk_size: int | None = None,
    devices: int | str | None = None,
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
    group g from its own state and then advances it with theta: truncated ES with
    per-particle states (the learned-optimizer literature's ``tes``), so that particles do not reset in
    lockstep.  With one group it is the shared-state estimator.

    Args:
      system: the inner problem.
      trunc_len: truncation length K.
      sigma: standard deviation of the perturbations.
      num_particles: N, counting both members of every antithetic pair.
      antithetic: use (+eps, -eps) pairs.
      divide_by_variance: ARS-style scaling for control (see `std_scale`); off by
        default, and off is the plain estimate above.
      particle_chunk_size: unroll at most this many particles at once (``lax.map`` over
        chunks inside the compiled estimate; identical results); None = all at once.
      devices: shard the particles over devices (see `pes.sharding`): None or 1, "auto"
        or a device count; the shared mean trajectory is replicated.
      stagger: one state per group, started at random offsets within the episode.
    """
    C.check_trunc_len("es", system, trunc_len)
    C.check_sigma("es", sigma)
    C.check_particles("es", num_particles, antithetic)
    C.check_bool("es", "divide_by_variance", divide_by_variance)
    C.check_stagger("es", system, stagger)
    lay = C.layout(num_particles, antithetic)
    num_chunks, shard = _particle_plan("es", lay, particle_chunk_size, devices)
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
                return C.group_where(j < offsets, new_inner, inner), None

            inner, _ = jax.lax.scan(body, inner, (jnp.arange(system.horizon - 1), keys))
        return ESState(inner, offsets)

    def estimate(key, theta, state):
        noise_key, data_key = C.split_key(key)
        eps = shard.groups(C.sample_noise(noise_key, theta, lay.num_groups, sigma))
        starts = state.inner
        if stagger:  # each group's members start from the group's own state
            starts = jax.tree.map(
                lambda x: jnp.broadcast_to(x[:, None], (x.shape[0], lay.group_size) + x.shape[1:]),
                state.inner,
            )
        out = _unroll_groups(
            system,
            theta,
            eps,
            lay,
            starts,
            state.t,
            data_key,
            trunc_len,
            shared_inner=not stagger,
            num_chunks=num_chunks,
            shard=shard,
            keep_state=False,
        )
        grad = C.combine(_antithetic_differences(out.total, lay), eps, scale, theta)
        if divide_by_variance:
            grad = _scale_tree(grad, std_scale(out.total, sigma))
        if stagger:
            advance = jax.vmap(lambda s, t: systems.unroll(system, theta, s, t, data_key, trunc_len)[:2])
            new_state = ESState(*advance(state.inner, state.t))
        elif skip_mean:
            reset_key = systems.step_keys(data_key, trunc_len)[-1, 1]
            new_state = ESState(system.init(reset_key), jnp.zeros((), jnp.int32))
        else:
            inner, t, _, _ = systems.unroll(system, theta, state.inner, state.t, data_key, trunc_len)
            new_state = ESState(inner, t)
        aux = {"loss": jnp.mean(out.total)}
        return grad, new_state, aux

    mean_cost = lay.num_groups * trunc_len if stagger else (0 if skip_mean else trunc_len)
    cost = num_particles * trunc_len + mean_cost
    hparams = dict(trunc_len=trunc_len, sigma=sigma, num_particles=num_particles, antithetic=antithetic)
    if stagger:
        hparams["stagger"] = True
    if divide_by_variance:
        hparams["divide_by_variance"] = True
    C.scale_hparams(hparams, particle_chunk_size, devices)
    return C.GradientEstimator(init, estimate, "es", hparams, trunc_len, cost)


def _perturbed_burn_in(system, theta, eps, lay, inner, offset_key, burn_key):
    """Advance group g by offset_g ~ U{0..T-1} steps with theta + sign * eps_g.

    Returns (inner states, offsets): the offsets are the groups' step counters.
    """
    horizon = system.horizon
    offsets = jax.random.randint(offset_key, (lay.num_groups,), 0, horizon, jnp.int32)
    thetas = C.perturb(theta, eps, lay)
    keys = systems.step_keys(burn_key, horizon - 1)
    step = jax.vmap(jax.vmap(system.step, in_axes=(0, 0, None)), in_axes=(0, 0, None))

    def body(inner, xs):
        j, key_pair = xs
        new_inner, _ = step(thetas, inner, key_pair[0])
        return C.group_where(j < offsets, new_inner, inner), None

    inner, _ = jax.lax.scan(body, inner, (jnp.arange(horizon - 1), keys))
    return inner, offsets


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
    divide_by_variance: bool = False,
    particle_chunk_size: int | None = None,
    devices: int | str | None = None,
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
      divide_by_variance: ARS-style scaling for control (see `std_scale`); off by
        default, and off is the unbiased estimate above.
      particle_chunk_size: unroll at most this many particles at once (``lax.map`` over
        chunks inside the compiled estimate; identical results); None = all at once.
      devices: shard the particle groups, their states and accumulators over devices
        (see `pes.sharding`): None or 1, "auto" or a device count.  The only cross-device
        work per truncation is the sum (mean) of the gradient over groups.
    """
    C.check_trunc_len("pes", system, trunc_len)
    C.check_sigma("pes", sigma)
    C.check_particles("pes", num_particles, antithetic)
    C.check_bool("pes", "divide_by_variance", divide_by_variance)
    C.check_stagger("pes", system, stagger)
    lay = C.layout(num_particles, antithetic)
    num_chunks, shard = _particle_plan("pes", lay, particle_chunk_size, devices)
    scale = 1.0 / (num_particles * sigma**2)

    def init(key, theta):
        state_key, offset_key, noise_key, burn_key = jax.random.split(key, 4)
        shape = (lay.num_groups, lay.group_size)
        inner = C.broadcast_state(system.init(state_key), shape)
        t = jnp.zeros((lay.num_groups,), jnp.int32)
        accum = C.zeros_per_group(theta, lay.num_groups)
        if stagger and system.horizon > 1:
            eps = C.sample_noise(noise_key, theta, lay.num_groups, sigma)
            inner, t = _perturbed_burn_in(system, theta, eps, lay, inner, offset_key, burn_key)
            started = t > 0  # the burn-in's perturbation is part of the episode's history
            accum = C.group_where(started, eps, jax.tree.map(jnp.zeros_like, eps))
        return shard.groups(PESState(inner, t, accum))

    def estimate(key, theta, state):
        noise_key, data_key = C.split_key(key)
        eps = shard.groups(C.sample_noise(noise_key, theta, lay.num_groups, sigma))
        out = _unroll_groups(
            system,
            theta,
            eps,
            lay,
            state.inner,
            state.t,
            data_key,
            trunc_len,
            shared_inner=False,
            num_chunks=num_chunks,
            shard=shard,
        )
        grad, accum = pes_update(
            _antithetic_differences(out.total, lay),
            _antithetic_differences(out.before, lay),
            out.any_end,
            out.last_end,
            eps,
            state.accum,
            scale,
            theta,
        )
        if divide_by_variance:
            grad = _scale_tree(grad, std_scale(out.total, sigma))
        aux = {"loss": jnp.mean(out.total)}
        return grad, shard.groups(PESState(out.inner, out.t, accum)), aux

    hparams = dict(
        trunc_len=trunc_len,
        sigma=sigma,
        num_particles=num_particles,
        antithetic=antithetic,
        stagger=stagger,
    )
    if divide_by_variance:
        hparams["divide_by_variance"] = True
    C.scale_hparams(hparams, particle_chunk_size, devices)
    return C.GradientEstimator(init, estimate, "pes", hparams, trunc_len, num_particles * trunc_len)


class NRESState(NamedTuple):
    """Noise-reuse ES.

    Attributes:
      inner: per-particle inner states, leaves of shape (G, M, ...).
      t: per-group step counters, shape (G,).
      eps: each group's perturbation for its current episode (theta's tree, leading G axis).
    """

    inner: PyTree
    t: jax.Array
    eps: PyTree


def nres(
    system: systems.UnrolledSystem,
    *,
    trunc_len: int,
    sigma: float,
    num_particles: int,
    antithetic: bool = True,
    stagger: bool = False,
    particle_chunk_size: int | None = None,
    devices: int | str | None = None,
) -> C.GradientEstimator:
    """Noise-reuse evolution strategies (NRES; Li et al., NeurIPS 2023).

    Each antithetic pair draws one perturbation eps per episode and reuses it for every
    truncation of that episode; the estimate of one truncation is

        g = 1 / (N sigma^2) * sum_i  L_i(truncation; theta + eps_i) * eps_i,

    where the inner state was also produced under theta + eps_i.  Summed over an episode's
    truncations this is full-episode ES with one perturbation per episode, so for a fixed
    theta it is unbiased for the gradient of the Gaussian-smoothed whole-episode objective
    (the same target as PES), with the episode's one perturbation in place of PES's
    sum of every truncation's perturbation.  An episode that ends
    inside a truncation starts the next one with a fresh perturbation from the next step on
    (losses after the reset are weighted by it).  ``stagger=True`` starts pairs at random
    offsets through a burn-in under the episode's own perturbation, which NRES's
    authors recommend (lockstep particles make consecutive estimates strongly correlated).

    Args: as `pes` (without ``divide_by_variance``).
    """
    C.check_trunc_len("nres", system, trunc_len)
    C.check_sigma("nres", sigma)
    C.check_particles("nres", num_particles, antithetic)
    C.check_stagger("nres", system, stagger)
    lay = C.layout(num_particles, antithetic)
    num_chunks, shard = _particle_plan("nres", lay, particle_chunk_size, devices)
    scale = 1.0 / (num_particles * sigma**2)

    def init(key, theta):
        state_key, offset_key, noise_key, burn_key = jax.random.split(key, 4)
        inner = C.broadcast_state(system.init(state_key), (lay.num_groups, lay.group_size))
        t = jnp.zeros((lay.num_groups,), jnp.int32)
        eps = C.sample_noise(noise_key, theta, lay.num_groups, sigma)
        if stagger and system.horizon > 1:
            inner, t = _perturbed_burn_in(system, theta, eps, lay, inner, offset_key, burn_key)
        return shard.groups(NRESState(inner, t, eps))

    def estimate(key, theta, state):
        noise_key, data_key = C.split_key(key)
        fresh = shard.groups(C.sample_noise(noise_key, theta, lay.num_groups, sigma))
        out = _unroll_groups(
            system,
            theta,
            state.eps,
            lay,
            state.inner,
            state.t,
            data_key,
            trunc_len,
            shared_inner=False,
            num_chunks=num_chunks,
            shard=shard,
            eps_after=fresh,
        )
        before = _antithetic_differences(out.before, lay)
        after = _antithetic_differences(out.total, lay) - before

        # losses up to the first episode end saw the old perturbation, later ones the fresh one
        grad = C.combine2(before, state.eps, after, fresh, scale, theta)
        eps = C.group_where(out.any_end, fresh, state.eps)
        aux = {"loss": jnp.mean(out.total)}
        return grad, shard.groups(NRESState(out.inner, out.t, eps)), aux

    hparams = dict(
        trunc_len=trunc_len, sigma=sigma, num_particles=num_particles, antithetic=antithetic, stagger=stagger
    )
    C.scale_hparams(hparams, particle_chunk_size, devices)
    return C.GradientEstimator(init, estimate, "nres", hparams, trunc_len, num_particles * trunc_len)


class GPESState(NamedTuple):
    """Generalised PES (GPES-K).

    Attributes:
      inner: per-particle inner states, leaves of shape (G, M, ...).
      t: per-group step counters, shape (G,).
      accum: per-group sum of every perturbation of the current episode so far, including
        the current block's (theta's tree, leading G axis); member m carries sign_m * accum.
      eps: per-group perturbation of the current noise block (theta's tree, leading G axis).
      age: per-group number of truncations the current block has been used in within the
        episode, shape (G,); a block whose age reached ``noise_every / trunc_len`` is
        replaced at the next truncation start.
    """

    inner: PyTree
    t: jax.Array
    accum: PyTree
    eps: PyTree
    age: jax.Array


def _noise_blocks(system, trunc_len, noise_every):
    """Truncations per noise block for `gpes`, or None for one block per episode (NRES)."""
    ok = noise_every is None or (C._is_int(noise_every) and noise_every >= 1)
    if ok and (noise_every is None or (system.horizon is not None and noise_every >= system.horizon)):
        return None
    if not ok or noise_every % trunc_len:
        horizon = "" if system.horizon is None else f", or an integer >= the horizon T={system.horizon}"
        raise ValueError(
            f"estimator 'gpes': noise_every={noise_every!r} is invalid with trunc_len={trunc_len}; "
            f"allowed: a positive multiple of trunc_len (noise_every = trunc_len is PES){horizon} "
            "or null (one perturbation per episode: NRES)"
        )
    return noise_every // trunc_len


def gpes(
    system: systems.UnrolledSystem,
    *,
    trunc_len: int,
    sigma: float,
    num_particles: int,
    noise_every: int | None,
    antithetic: bool = True,
    stagger: bool = False,
    particle_chunk_size: int | None = None,
    devices: int | str | None = None,
) -> C.GradientEstimator:
    """Generalised PES, GPES-K (Li et al., NeurIPS 2023): fresh noise every K steps.

    Each antithetic pair's episode is cut into noise blocks of ``noise_every`` inner steps
    (K in the NRES paper).  A pair runs with theta +/- the current block's perturbation; the
    loss of every step is weighted by the sum of all perturbations its episode has used so
    far (the accumulator), exactly as in PES.  Summed over an episode this is unbiased for
    the Gaussian-smoothed whole-episode gradient whatever the blocks are, as long as where
    they start does not depend on the noise.  ``noise_every = trunc_len`` is PES (one block
    per truncation) and ``noise_every >= horizon`` (or None) is NRES (one block per episode);
    for the same keys `gpes` then returns the numbers of `pes` / `nres` (tested).

    Blocks and truncations (the precise rule; m = noise_every / trunc_len):
      * noise_every must be a multiple of trunc_len (or >= the horizon): new perturbations
        are only started at truncation starts and at episode ends.
      * Every estimate draws one candidate perturbation per pair from its noise key (the
        same draw as `pes` and `nres`).
      * At a truncation start a pair replaces its block (and adds the new perturbation to
        its accumulator) once the block has been used in m truncations of the episode; a
        truncation in which the block started mid-way counts as one.  In lockstep with
        trunc_len dividing T the blocks are therefore exactly noise_every steps long and
        aligned with the episode's start (the last block of an episode may be shorter).
      * An episode that ends inside a truncation continues from the next step with that
        truncation's draw as its first block (accumulator = that draw).  One that ends on
        the truncation's last step starts its first block at the next truncation with the
        next draw; with one block per episode (NRES) the draw of the truncation that ended
        the episode is kept for the next episode instead (as `nres` does).
      * ``stagger=True``: pairs start at random offsets through a burn-in under one
        perturbation (as `pes` and `nres`); the burn-in is the episode's first block, of
        age ceil(offset / trunc_len) truncations (capped at m).

    Args: as `pes` (without ``divide_by_variance``), plus
      noise_every: inner steps per noise block (a multiple of trunc_len), or an integer >=
        the horizon / None for one perturbation per episode.
    """
    C.check_trunc_len("gpes", system, trunc_len)
    C.check_sigma("gpes", sigma)
    C.check_particles("gpes", num_particles, antithetic)
    C.check_stagger("gpes", system, stagger)
    blocks = _noise_blocks(system, trunc_len, noise_every)
    lay = C.layout(num_particles, antithetic)
    num_chunks, shard = _particle_plan("gpes", lay, particle_chunk_size, devices)
    scale = 1.0 / (num_particles * sigma**2)
    groups = lay.num_groups

    def init(key, theta):
        state_key, offset_key, noise_key, burn_key = jax.random.split(key, 4)
        inner = C.broadcast_state(system.init(state_key), (groups, lay.group_size))
        t = jnp.zeros((groups,), jnp.int32)
        zeros = C.zeros_per_group(theta, groups)
        if blocks is None:  # one block per episode, drawn in advance (as nres)
            eps = C.sample_noise(noise_key, theta, groups, sigma)
            if stagger and system.horizon > 1:
                inner, t = _perturbed_burn_in(system, theta, eps, lay, inner, offset_key, burn_key)
            age = jnp.zeros((groups,), jnp.int32)
            return shard.groups(GPESState(inner, t, eps, eps, age))
        accum, eps, age = zeros, zeros, jnp.full((groups,), blocks, jnp.int32)
        if stagger and system.horizon > 1:
            burn = C.sample_noise(noise_key, theta, groups, sigma)
            inner, t = _perturbed_burn_in(system, theta, burn, lay, inner, offset_key, burn_key)
            started = t > 0  # the burn-in's perturbation is the episode's first block
            accum = eps = C.group_where(started, burn, zeros)
            age = jnp.where(started, jnp.minimum(blocks, -(-t // trunc_len)), blocks).astype(jnp.int32)
        return shard.groups(GPESState(inner, t, accum, eps, age))

    def estimate(key, theta, state):
        noise_key, data_key = C.split_key(key)
        fresh = shard.groups(C.sample_noise(noise_key, theta, groups, sigma))
        if blocks is None:
            eps, accum, refresh = state.eps, state.accum, None
        else:  # a block used in m truncations is replaced by this truncation's draw
            refresh = state.age >= blocks
            eps = C.group_where(refresh, fresh, state.eps)
            accum = C.group_where(refresh, jax.tree.map(jnp.add, state.accum, fresh), state.accum)
        out = _unroll_groups(
            system,
            theta,
            eps,
            lay,
            state.inner,
            state.t,
            data_key,
            trunc_len,
            shared_inner=False,
            num_chunks=num_chunks,
            shard=shard,
            eps_after=fresh,
        )
        grad, accum, eps, age = gpes_update(
            _antithetic_differences(out.total, lay),
            _antithetic_differences(out.before, lay),
            out.any_end,
            out.last_end,
            fresh,
            state,
            accum,
            eps,
            refresh,
            blocks,
            scale,
            theta,
        )
        aux = {"loss": jnp.mean(out.total)}
        return grad, shard.groups(GPESState(out.inner, out.t, accum, eps, age)), aux

    hparams = dict(
        trunc_len=trunc_len,
        sigma=sigma,
        num_particles=num_particles,
        noise_every=noise_every,
        antithetic=antithetic,
        stagger=stagger,
    )
    C.scale_hparams(hparams, particle_chunk_size, devices)
    return C.GradientEstimator(init, estimate, "gpes", hparams, trunc_len, num_particles * trunc_len)


def gpes_update(total, before, any_end, last_end, fresh, state, accum, eps, refresh, blocks, scale, like):
    """The GPES gradient and the pairs' new (accum, eps, age) from one truncation.

    Args:
      total, before, any_end, last_end: as in `pes_update`.
      fresh: this truncation's draw (theta's tree, leading G axis).
      state: the `GPESState` before the truncation.
      accum, eps: the accumulator and block perturbation the truncation ran with (after
        the block replacement at its start).
      refresh: (G,) bool, the block was replaced at the truncation start (None when
        ``blocks`` is None: one block per episode).
      blocks: truncations per block, or None.
      scale, like: as in `pes_update`.

    Losses up to a pair's first episode end are weighted by ``accum``, later ones by
    ``fresh`` (the new episode's first block).  The sums are written in the same order as
    `pes_update` (blocks = 1) and `nres` (blocks None), so those ends give their numbers.
    """
    after = total - before
    if blocks is None:
        grad = C.combine2(before, state.eps, after, fresh, scale, like)
        eps = C.group_where(any_end, fresh, state.eps)
        return grad, eps, eps, jnp.zeros_like(state.age)
    # before . (accum_prev + fresh) + after . fresh = before . accum_prev + total . fresh
    grad = C.combine2(jnp.where(refresh, total, after), fresh, before, state.accum, scale, like)
    zeros = jax.tree.map(jnp.zeros_like, fresh)
    accum = C.group_where(last_end, zeros, C.group_where(any_end, fresh, accum))
    eps = C.group_where(any_end, fresh, eps)
    age = jnp.where(refresh, 0, state.age) + 1
    age = jnp.where(last_end, blocks, jnp.where(any_end, 1, age)).astype(state.age.dtype)
    return grad, accum, eps, age


def pes_update(total, before, any_end, last_end, eps, accum, scale, like):
    """The PES gradient and the new accumulators from one truncation's outcomes.

    Shared by every driver of PES, so the estimator's arithmetic exists once.

    Args:
      total: (G,) each group's antithetic difference of unroll objectives,
        sum_m sign_m sum_j w_j loss_{g,m,j} (for non-antithetic groups, the objective).
      before: (G,) the same sum restricted to the steps up to and including the group's
        first episode end in this truncation (equal to ``total`` if none ended).
      any_end: (G,) bool, the group's episode ended at some step of the truncation.
      last_end: (G,) bool, it ended at the truncation's last step.
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

    grad = C.combine2(total, eps, before, accum, scale, like)
    cont = C.group_where(any_end, eps, jax.tree.map(jnp.add, accum, eps))
    return grad, C.group_where(last_end, jax.tree.map(jnp.zeros_like, eps), cont)


def std_scale(objectives, sigma):
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


def _scale_tree(tree, factor):
    return jax.tree.map(lambda g: (g * factor).astype(g.dtype), tree)


__all__ = ["ESState", "GPESState", "NRESState", "PESState", "es", "gpes", "nres", "pes"]
