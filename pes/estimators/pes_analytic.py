"""PES-A: PES with the analytic gradient of the current truncation (paper code ``pes-a``).

One extra inner state s_bar is advanced with the unperturbed theta.  Per truncation

    g_a = grad_theta L_tau(s_bar; theta)        (backprop through this truncation only)
    g   = g_a + 1 / (N sigma^2) * sum_i [L_tau^(i) - eps_i . g_a] * xi_prev_i,

where xi_prev is the PES accumulator *before* this truncation's perturbation is added (it
is added afterwards, as in PES).  The truncated-ES part of PES, sum_i L_i eps_i / (N
sigma^2), is replaced by its analytic counterpart g_a, and eps_i . g_a is a control
variate for the history term: it has mean zero because eps_i is independent of xi_prev.
When the step loss and the state are linear-quadratic in the perturbations (as in
`pes.tasks.linear_quadratic`) the estimate is unbiased like PES; otherwise g_a, taken at
the mean state rather than at the perturbed particles' states, is a first-order
approximation.  The paper uses it only in its appendix variance study.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from pes import systems
from pes.estimators import _common, particles
from pes.estimators.persistent import pes_update

PyTree = Any


class PESAState(NamedTuple):
    """PES-A: the PES state plus the unperturbed mean trajectory.

    Attributes:
      inner, t, accum: as `pes.estimators.PESState`.
      mean_inner: the inner state advanced with theta itself.
      mean_t: its step counter (a scalar; particles run in lockstep with it).
    """

    inner: PyTree
    t: jax.Array
    accum: PyTree
    mean_inner: PyTree
    mean_t: jax.Array


def pes_a(
    system: systems.UnrolledSystem,
    *,
    trunc_len: int,
    sigma: float,
    num_particles: int,
    antithetic: bool = True,
    particle_chunk_size: int | None = None,
    devices: int | str | None = None,
) -> _common.GradientEstimator:
    """PES with an analytic current-truncation gradient (see the module docstring).

    The system's step must be differentiable in theta.  Particles run in lockstep with
    the mean trajectory, and ``trunc_len`` must divide the horizon (so no episode ends
    inside a truncation).  Other arguments as `pes`.
    """
    s = particles.setup("pes_a", system, particles.Options.of(locals()))
    if system.horizon is not None and system.horizon % trunc_len:
        raise ValueError(
            f"estimator 'pes_a': trunc_len={trunc_len} is invalid with horizon={system.horizon}; "
            "allowed: a divisor of the horizon (episodes must end at truncation boundaries)"
        )
    lay, run = s.lay, s.engine()

    def init(key, theta):
        state_key = jax.random.split(key, 4)[0]  # the same particle states as `pes`
        fresh = system.init(state_key)
        inner = _common.broadcast_state(fresh, (lay.num_groups, lay.group_size))
        t = jnp.zeros((lay.num_groups,), jnp.int32)
        accum = _common.zeros_per_group(theta, lay.num_groups)
        # the per-group fields are split over the devices, the mean trajectory is replicated
        return PESAState(*s.shard.groups((inner, t, accum)), fresh, jnp.zeros((), jnp.int32))

    def estimate(key, theta, state):
        noise_key, data_key = _common.split_key(key)
        eps = s.shard.groups(_common.sample_noise(noise_key, theta, lay.num_groups, sigma))
        out = run(theta, particles.Groups(eps, state.inner, state.t), None, data_key)
        g_a, (mean_inner, mean_t) = analytic_gradient(system, theta, state, data_key, trunc_len)
        grad, accum = pes_a_update(particles.outcome(out, lay), eps, state.accum, g_a, s, theta)
        aux = {"loss": jnp.mean(out.total)}
        return grad, PESAState(*s.shard.groups((out.inner, out.t, accum)), mean_inner, mean_t), aux

    hp = dict(trunc_len=trunc_len, sigma=sigma, num_particles=num_particles, antithetic=antithetic)
    cost = num_particles * trunc_len + trunc_len
    return _common.GradientEstimator(init, estimate, "pes_a", particles.hparams(s, hp), trunc_len, cost)


def analytic_gradient(
    system: systems.UnrolledSystem, theta: PyTree, state: PESAState, data_key: jax.Array, trunc_len: int
) -> tuple[PyTree, tuple[PyTree, jax.Array]]:
    """(grad_theta L_tau(s_bar; theta), (mean state, its counter) after the truncation)."""

    def mean_objective(th):
        inner, t, losses, _ = systems.unroll(system, th, state.mean_inner, state.mean_t, data_key, trunc_len)
        return losses @ systems.step_weights(system, trunc_len, losses.dtype), (inner, t)

    (_, mean), g_a = jax.value_and_grad(mean_objective, has_aux=True)(theta)
    return g_a, mean


def pes_a_update(
    out: particles.Outcome, eps: PyTree, accum: PyTree, g_a: PyTree, s: particles.Setup, like: PyTree
) -> tuple[PyTree, PyTree]:
    """The PES-A gradient and the new accumulators (see the module docstring)."""
    # sum_m sign_m * (sign_m eps_g . g_a) = M * eps_g . g_a: the control variate per group
    eps_dot = sum(
        jnp.sum(e * jnp.expand_dims(g.astype(e.dtype), 0), axis=tuple(range(1, e.ndim)))
        for e, g in zip(jax.tree.leaves(eps), jax.tree.leaves(g_a))
    )
    coeff = out.total - s.lay.group_size * eps_dot.astype(out.total.dtype)
    history, accum = pes_update(
        out._replace(total=jnp.zeros_like(coeff), before=coeff), eps, accum, s.scale, like
    )
    grad = jax.tree.map(lambda a, h: (a + h).astype(h.dtype), g_a, history)
    return grad, accum
