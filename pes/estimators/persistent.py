"""Persistent evolution strategies (Vicol, Metz, Sohl-Dickstein, ICML 2021, Algorithm 1).

Gaussian perturbations eps ~ N(0, sigma^2 I) of theta, antithetic pairs by default, and common
random numbers: every particle of an estimate sees the same data and reset keys.  With N
particles the estimate is

    g = 1 / (N sigma^2) * sum_i  sum_j  w_ij * loss_ij,

where loss_ij is the loss of particle i at step j of the truncation and w_ij the sum of every
perturbation the particle's current episode has seen, including this truncation's: accumulate,
then estimate.  A group's members carry opposite accumulators, so one accumulator per
antithetic pair is stored.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from pes import horizons, systems
from pes.estimators import _common, particles

PyTree = Any


class PESState(NamedTuple):
    """Persistent ES.

    Attributes:
      inner: per-particle inner states, leaves of shape (G, M, ...): the + and - members
        of a pair keep separate states.
      t: per-group step counters, shape (G,) (a `pes.estimators.particles.Clock` under a
        random horizon schedule).
      accum: per-group perturbation accumulator xi, theta's tree with a leading G axis;
        member m carries sign_m * xi.
    """

    inner: PyTree
    t: Any
    accum: PyTree


def pes_update(
    out: particles.Outcome, eps: PyTree, accum: PyTree, scale: float, like: PyTree
) -> tuple[PyTree, PyTree]:
    """The PES gradient and the new accumulators from one truncation's `Outcome`.

    Shared by every driver of PES (also PES-A), so the estimator's arithmetic exists once.

    Args:
      out: the truncation per group (antithetic differences and episode-end flags).
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
    grad = _common.combine2(out.total, eps, out.before, accum, scale, like)
    cont = _common.group_where(out.any_end, eps, jax.tree.map(jnp.add, accum, eps))
    return grad, _common.group_where(out.last_end, jax.tree.map(jnp.zeros_like, eps), cont)


def burn_in_accumulator(s: particles.Setup, state: PESState, eps: PyTree) -> PESState:
    """A staggered start: the burn-in's perturbation is part of the episode's history."""
    started = s.clock.steps(state.t) > 0
    return state._replace(accum=_common.group_where(started, eps, jax.tree.map(jnp.zeros_like, eps)))


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
    horizon_schedule: horizons.Schedule | None = None,
) -> _common.GradientEstimator:
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
      horizon_schedule: per-episode horizons drawn from a `pes.horizons` schedule instead
        of the system's fixed horizon (None).
    """
    s = particles.setup("pes", system, particles.Options.of(locals()))
    lay, run = s.lay, s.engine()

    def lockstep_init(key, theta):
        state_key = jax.random.split(key, 4)[0]
        inner = _common.broadcast_state(s.system.init(state_key), (lay.num_groups, lay.group_size))
        return PESState(
            inner, s.start_clock(key, lay.num_groups), _common.zeros_per_group(theta, lay.num_groups)
        )

    def draw(noise_key, theta, state):
        del state
        return _common.sample_noise(noise_key, theta, lay.num_groups, sigma)

    staggered = particles.staggered(
        s, lockstep_init, draw, lambda state, eps: burn_in_accumulator(s, state, eps)
    )

    def init(key, theta):
        return s.shard.groups(staggered(key, theta))

    def estimate(key, theta, state):
        noise_key, data_key = _common.split_key(key)
        eps = s.shard.groups(_common.sample_noise(noise_key, theta, lay.num_groups, sigma))
        out = run(theta, particles.Groups(eps, state.inner, state.t), None, data_key)
        grad, accum = pes_update(particles.outcome(out, lay), eps, state.accum, s.scale, theta)
        if divide_by_variance:
            grad = _common.scale_tree(grad, _common.std_scale(out.total, sigma))
        aux = {"loss": jnp.mean(out.total)}
        return grad, s.shard.groups(PESState(out.inner, out.t, accum)), aux

    hp = dict(
        trunc_len=trunc_len, sigma=sigma, num_particles=num_particles, antithetic=antithetic, stagger=stagger
    )
    if divide_by_variance:
        hp["divide_by_variance"] = True
    return _common.GradientEstimator(
        init, estimate, "pes", particles.hparams(s, hp), trunc_len, num_particles * trunc_len
    )
