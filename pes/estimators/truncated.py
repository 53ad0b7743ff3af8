"""Truncated and full-unroll evolution strategies (paper Sec. 3; `es_grad` in the official code).

Gaussian perturbations eps ~ N(0, sigma^2 I) of theta, antithetic pairs by default, common
random numbers.  Every particle starts the truncation from the unperturbed state, so only
the current truncation is perturbed: with N particles the estimate is

    g = 1 / (N sigma^2) * sum_i  sum_j  loss_ij * eps_i,

which is biased for the whole-episode objective unless the truncation is the whole episode.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from pes import horizons, systems
from pes.estimators import _common, particles

PyTree = Any


class ESState(NamedTuple):
    """Truncated ES: the inner state(s) advanced with the unperturbed theta.

    With ``stagger=False`` one shared state (``t`` a scalar); with ``stagger=True`` one
    state per antithetic group (leaves with a leading G axis, ``t`` of shape (G,)).  Under a
    random horizon schedule ``t`` is a `pes.estimators.particles.Clock`.
    """

    inner: PyTree
    t: Any


def es_update(out: particles.Outcome, eps: PyTree, scale: float, like: PyTree) -> PyTree:
    """The truncated-ES gradient: sum_g out.total[g] * eps[g] * scale (dtypes of ``like``)."""
    return _common.combine(out.total, eps, scale, like)


def _mean_advance(s: particles.Setup, skip_mean: bool):
    """``advance(theta, state, data_key) -> ESState``: the unperturbed state(s) K steps on."""
    system, k = s.system, s.opts.trunc_len
    if isinstance(s.clock, particles.DrawnClock):
        spec = s.truncation()
        one = lambda theta, inner, t, key: particles.clocked_unroll(spec, theta, inner, t, key)
    else:
        one = lambda theta, inner, t, key: systems.unroll(system, theta, inner, t, key, k)[:2]

    def per_group(theta, state, data_key):
        return ESState(*jax.vmap(lambda inner, t: one(theta, inner, t, data_key))(state.inner, state.t))

    def reinit(theta, state, data_key):
        reset_key = systems.step_keys(data_key, k)[-1, 1]
        return ESState(system.init(reset_key), jnp.zeros((), jnp.int32))

    if s.opts.stagger:
        return per_group
    return reinit if skip_mean else lambda theta, state, key: ESState(*one(theta, state.inner, state.t, key))


def _initial_state(s: particles.Setup):
    """``init(key, theta) -> ESState``: the shared state, or staggered per-group states."""
    groups = s.lay.num_groups

    def lockstep(key, theta):
        del theta
        t = jax.tree.map(lambda x: x[0], s.start_clock(key, 1))
        return ESState(s.system.init(key), t)

    def staggered(key, theta):
        state_key, offset_key, burn_key = jax.random.split(key, 3)
        inner = _common.broadcast_state(s.system.init(state_key), (groups,))
        t, offsets = s.clock.random_phase(s.start_clock(key, groups), offset_key)
        if s.burn_steps >= 1:
            step = jax.vmap(s.system.step, in_axes=(None, 0, None))
            inner = particles.burn_in(lambda x, k: step(theta, x, k), inner, offsets, burn_key, s.burn_steps)
        return ESState(inner, t)

    return staggered if s.opts.stagger else lockstep


def _starts(s: particles.Setup, state: ESState, eps):
    """(`Groups`, shared state) of a truncation: every member starts from its group's state."""
    groups, members = s.lay
    if s.opts.stagger:
        starts = jax.tree.map(
            lambda x: jnp.broadcast_to(x[:, None], (x.shape[0], members) + x.shape[1:]), state.inner
        )
        return particles.Groups(eps, starts, state.t), None
    t = jax.tree.map(lambda x: jnp.broadcast_to(x, (groups,)), state.t)
    return particles.Groups(eps, None, t), state.inner


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
    horizon_schedule: horizons.Schedule | None = None,
) -> _common.GradientEstimator:
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
      horizon_schedule: per-episode horizons drawn from a `pes.horizons` schedule instead
        of the system's fixed horizon (None).
    """
    s = particles.setup("es", system, particles.Options.of(locals()))
    run = s.engine(keep_state=False)
    # When every truncation covers whole episodes the mean trajectory ends in a reset, so
    # advancing it is wasted work: re-initialise it directly with the same reset key.
    horizon = s.system.horizon
    skip_mean = isinstance(s.clock, particles.FixedClock) and horizon is not None and trunc_len % horizon == 0
    skip_mean = skip_mean and not stagger
    advance = _mean_advance(s, skip_mean)

    def estimate(key, theta, state):
        noise_key, data_key = _common.split_key(key)
        eps = s.shard.groups(_common.sample_noise(noise_key, theta, s.lay.num_groups, sigma))
        out = run(theta, *_starts(s, state, eps), data_key)
        grad = es_update(particles.outcome(out, s.lay), eps, s.scale, theta)
        if divide_by_variance:
            grad = _common.scale_tree(grad, _common.std_scale(out.total, sigma))
        new_state = advance(theta, state, data_key)
        return grad, new_state, {"loss": jnp.mean(out.total)}

    mean_cost = s.lay.num_groups * trunc_len if stagger else (0 if skip_mean else trunc_len)
    hp = dict(trunc_len=trunc_len, sigma=sigma, num_particles=num_particles, antithetic=antithetic)
    if stagger:
        hp["stagger"] = True
    if divide_by_variance:
        hp["divide_by_variance"] = True
    cost = num_particles * trunc_len + mean_cost
    return _common.GradientEstimator(
        _initial_state(s), estimate, "es", particles.hparams(s, hp), trunc_len, cost
    )
