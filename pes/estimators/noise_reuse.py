"""Noise-reuse evolution strategies: NRES and generalised PES, GPES-K (Li et al., NeurIPS 2023).

NRES draws one perturbation per antithetic pair and episode and reuses it for every
truncation of the episode; GPES-K cuts the episode into noise blocks of K inner steps, each
with a fresh perturbation, and weights every loss by the sum of the blocks its episode has
used so far (the accumulator, as in PES).  Blocks of one truncation are PES, one block per
episode is NRES.  Both are unbiased for the gradient of the Gaussian-smoothed whole-episode
objective, the target of PES.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from pes import horizons, systems
from pes.estimators import _common, particles

PyTree = Any


class NRESState(NamedTuple):
    """Noise-reuse ES.

    Attributes:
      inner: per-particle inner states, leaves of shape (G, M, ...).
      t: per-group step counters, shape (G,) (a `pes.estimators.particles.Clock` under a
        random horizon schedule).
      eps: each group's perturbation for its current episode (theta's tree, leading G axis).
    """

    inner: PyTree
    t: Any
    eps: PyTree


class GPESState(NamedTuple):
    """Generalised PES (GPES-K).

    Attributes:
      inner: per-particle inner states, leaves of shape (G, M, ...).
      t: per-group step counters, shape (G,) (a `Clock` under a random horizon schedule).
      accum: per-group sum of every perturbation of the current episode so far, including
        the current block's (theta's tree, leading G axis); member m carries sign_m * accum.
      eps: per-group perturbation of the current noise block (theta's tree, leading G axis).
      age: per-group number of truncations the current block has been used in within the
        episode, shape (G,); a block whose age reached ``noise_every / trunc_len`` is
        replaced at the next truncation start.
    """

    inner: PyTree
    t: Any
    accum: PyTree
    eps: PyTree
    age: jax.Array


class Blocks(NamedTuple):
    """What a GPES truncation runs with, after the block replacement at its start (leaves (G,...))."""

    eps: PyTree  # the block's perturbation
    accum: PyTree  # the accumulator, including ``eps``
    refresh: jax.Array  # (G,) bool: the block was replaced at this truncation's start


# ----------------------------------------------------------------------------- pure updates


def episode_update(
    out: particles.Outcome, eps: PyTree, fresh: PyTree, scale: float, like: PyTree
) -> tuple[PyTree, PyTree]:
    """NRES (one perturbation per episode): the gradient and the pairs' new perturbations.

    Losses up to a pair's first episode end in the truncation saw the episode's ``eps``,
    later ones the ``fresh`` draw, which becomes the perturbation of the new episode.
    """
    after = out.total - out.before
    grad = _common.combine2(out.before, eps, after, fresh, scale, like)
    return grad, _common.group_where(out.any_end, fresh, eps)


def block_start(state: GPESState, fresh: PyTree, blocks: int) -> Blocks:
    """A block used in ``blocks`` truncations is replaced by this truncation's draw."""
    refresh = state.age >= blocks
    eps = _common.group_where(refresh, fresh, state.eps)
    accum = _common.group_where(refresh, jax.tree.map(jnp.add, state.accum, fresh), state.accum)
    return Blocks(eps, accum, refresh)


def block_update(
    out: particles.Outcome, fresh: PyTree, prev_accum: PyTree, run: Blocks, scale: float, like: PyTree
) -> tuple[PyTree, PyTree, PyTree]:
    """GPES with blocks: the gradient and the pairs' new (accum, eps).

    Losses up to a pair's first episode end are weighted by ``run.accum``, later ones by
    ``fresh`` (the new episode's first block).  Written in the order of `pes_update`, so
    one block per truncation gives PES's numbers:
    before . (accum_prev + fresh) + after . fresh = before . accum_prev + total . fresh.
    """
    after = out.total - out.before
    grad = _common.combine2(
        jnp.where(run.refresh, out.total, after), fresh, out.before, prev_accum, scale, like
    )
    zeros = jax.tree.map(jnp.zeros_like, fresh)
    accum = _common.group_where(out.last_end, zeros, _common.group_where(out.any_end, fresh, run.accum))
    return grad, accum, _common.group_where(out.any_end, fresh, run.eps)


def block_ages(out: particles.Outcome, refresh: jax.Array, age: jax.Array, blocks: int) -> jax.Array:
    """Truncations each pair's block has been used in, after this one."""
    new = jnp.where(refresh, 0, age) + 1
    return jnp.where(out.last_end, blocks, jnp.where(out.any_end, 1, new)).astype(age.dtype)


# ----------------------------------------------------------------------------- NRES


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
    horizon_schedule: horizons.Schedule | None = None,
) -> _common.GradientEstimator:
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
    s = particles.setup("nres", system, particles.Options.of(locals()))
    lay, run = s.lay, s.engine()

    def lockstep_init(key, theta):
        state_key, _, noise_key, _ = jax.random.split(key, 4)
        inner = _common.broadcast_state(s.system.init(state_key), (lay.num_groups, lay.group_size))
        eps = _common.sample_noise(noise_key, theta, lay.num_groups, sigma)
        return NRESState(inner, s.start_clock(key, lay.num_groups), eps)

    staggered = particles.staggered(s, lockstep_init, lambda noise_key, theta, state: state.eps)

    def init(key, theta):
        return s.shard.groups(staggered(key, theta))

    def estimate(key, theta, state):
        noise_key, data_key = _common.split_key(key)
        fresh = s.shard.groups(_common.sample_noise(noise_key, theta, lay.num_groups, sigma))
        out = run(theta, particles.Groups(state.eps, state.inner, state.t, fresh), None, data_key)
        grad, eps = episode_update(particles.outcome(out, lay), state.eps, fresh, s.scale, theta)
        aux = {"loss": jnp.mean(out.total)}
        return grad, s.shard.groups(NRESState(out.inner, out.t, eps)), aux

    hp = dict(
        trunc_len=trunc_len, sigma=sigma, num_particles=num_particles, antithetic=antithetic, stagger=stagger
    )
    return _common.GradientEstimator(
        init, estimate, "nres", particles.hparams(s, hp), trunc_len, num_particles * trunc_len
    )


# ----------------------------------------------------------------------------- GPES-K


def noise_blocks(s: particles.Setup, noise_every: int | None) -> int | None:
    """Truncations per noise block for `gpes`, or None for one block per episode (NRES)."""
    trunc_len, horizon = s.opts.trunc_len, s.horizon
    ok = noise_every is None or (_common._is_int(noise_every) and noise_every >= 1)
    if ok and (noise_every is None or (horizon is not None and noise_every >= horizon)):
        return None
    if not ok or noise_every % trunc_len:
        longest = "" if horizon is None else f", or an integer >= the horizon T={horizon}"
        raise ValueError(
            f"estimator 'gpes': noise_every={noise_every!r} is invalid with trunc_len={trunc_len}; "
            f"allowed: a positive multiple of trunc_len (noise_every = trunc_len is PES){longest} "
            "or null (one perturbation per episode: NRES)"
        )
    return noise_every // trunc_len


def _gpes_init(s: particles.Setup, blocks, sigma):
    """``init(key, theta)`` of GPES-K: NRES's with one block per episode, else empty blocks."""
    lay = s.lay
    groups = lay.num_groups

    def lockstep_init(key, theta):
        state_key, _, noise_key, _ = jax.random.split(key, 4)
        inner = _common.broadcast_state(s.system.init(state_key), (groups, lay.group_size))
        t = s.start_clock(key, groups)
        if blocks is None:  # one block per episode, drawn in advance (as nres)
            eps = _common.sample_noise(noise_key, theta, groups, sigma)
            return GPESState(inner, t, eps, eps, jnp.zeros((groups,), jnp.int32))
        zeros = _common.zeros_per_group(theta, groups)
        return GPESState(inner, t, zeros, zeros, jnp.full((groups,), blocks, jnp.int32))

    def draw(noise_key, theta, state):
        return state.eps if blocks is None else _common.sample_noise(noise_key, theta, groups, sigma)

    def first_block(state, burn):  # the burn-in's perturbation is the episode's first block
        if blocks is None:
            return state
        t = s.clock.steps(state.t)
        started = t > 0
        accum = eps = _common.group_where(started, burn, state.accum)
        age = jnp.where(started, jnp.minimum(blocks, -(-t // s.opts.trunc_len)), blocks).astype(jnp.int32)
        return state._replace(accum=accum, eps=eps, age=age)

    staggered = particles.staggered(s, lockstep_init, draw, first_block)
    return lambda key, theta: s.shard.groups(staggered(key, theta))


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
    horizon_schedule: horizons.Schedule | None = None,
) -> _common.GradientEstimator:
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
        the horizon / None for one perturbation per episode.  Under a random horizon
        schedule "the horizon" is the longest episode it draws.
    """
    s = particles.setup("gpes", system, particles.Options.of(locals()))
    blocks = noise_blocks(s, noise_every)
    lay, run = s.lay, s.engine()

    def estimate(key, theta, state):
        noise_key, data_key = _common.split_key(key)
        fresh = s.shard.groups(_common.sample_noise(noise_key, theta, lay.num_groups, sigma))
        if blocks is None:
            out = run(theta, particles.Groups(state.eps, state.inner, state.t, fresh), None, data_key)
            grad, eps = episode_update(particles.outcome(out, lay), state.eps, fresh, s.scale, theta)
            accum, age = eps, jnp.zeros_like(state.age)
        else:
            blk = block_start(state, fresh, blocks)
            out = run(theta, particles.Groups(blk.eps, state.inner, state.t, fresh), None, data_key)
            summary = particles.outcome(out, lay)
            grad, accum, eps = block_update(summary, fresh, state.accum, blk, s.scale, theta)
            age = block_ages(summary, blk.refresh, state.age, blocks)
        aux = {"loss": jnp.mean(out.total)}
        return grad, s.shard.groups(GPESState(out.inner, out.t, accum, eps, age)), aux

    hp = dict(
        trunc_len=trunc_len,
        sigma=sigma,
        num_particles=num_particles,
        noise_every=noise_every,
        antithetic=antithetic,
        stagger=stagger,
    )
    cost = num_particles * trunc_len
    return _common.GradientEstimator(
        _gpes_init(s, blocks, sigma), estimate, "gpes", particles.hparams(s, hp), trunc_len, cost
    )
