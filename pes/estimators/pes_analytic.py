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
from pes.estimators import _common as C
from pes.estimators.evolution import _antithetic_differences, _particle_plan, _unroll_groups, pes_update

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
) -> C.GradientEstimator:
    """PES with an analytic current-truncation gradient (see the module docstring).

    The system's step must be differentiable in theta.  Particles run in lockstep with
    the mean trajectory, and ``trunc_len`` must divide the horizon (so no episode ends
    inside a truncation).  Other arguments as `pes`.
    """
    C.check_trunc_len("pes_a", system, trunc_len)
    C.check_sigma("pes_a", sigma)
    C.check_particles("pes_a", num_particles, antithetic)
    if system.horizon is not None and system.horizon % trunc_len:
        raise ValueError(
            f"estimator 'pes_a': trunc_len={trunc_len} is invalid with horizon={system.horizon}; "
            "allowed: a divisor of the horizon (episodes must end at truncation boundaries)"
        )
    lay = C.layout(num_particles, antithetic)
    num_chunks, shard = _particle_plan("pes_a", lay, particle_chunk_size, devices)
    scale = 1.0 / (num_particles * sigma**2)

    def init(key, theta):
        state_key = jax.random.split(key, 4)[0]  # the same particle states as `pes`
        fresh = system.init(state_key)
        inner = C.broadcast_state(fresh, (lay.num_groups, lay.group_size))
        t = jnp.zeros((lay.num_groups,), jnp.int32)
        accum = C.zeros_per_group(theta, lay.num_groups)
        return shard.groups(PESAState(inner, t, accum, fresh, jnp.zeros((), jnp.int32)))

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

        def mean_objective(th):
            inner, t, losses, _ = systems.unroll(
                system, th, state.mean_inner, state.mean_t, data_key, trunc_len
            )
            return losses @ systems.step_weights(system, trunc_len, losses.dtype), (inner, t)

        (_, (mean_inner, mean_t)), g_a = jax.value_and_grad(mean_objective, has_aux=True)(theta)
        # sum_m sign_m * (sign_m eps_g . g_a) = M * eps_g . g_a: the control variate per group
        eps_dot = sum(
            jnp.sum(e * jnp.expand_dims(g.astype(e.dtype), 0), axis=tuple(range(1, e.ndim)))
            for e, g in zip(jax.tree.leaves(eps), jax.tree.leaves(g_a))
        )
        diffs = _antithetic_differences(out.total, lay)
        coeff = diffs - lay.group_size * eps_dot.astype(diffs.dtype)
        history, accum = pes_update(
            jnp.zeros_like(coeff), coeff, out.any_end, out.last_end, eps, state.accum, scale, theta
        )
        grad = jax.tree.map(lambda a, h: (a + h).astype(h.dtype), g_a, history)
        aux = {"loss": jnp.mean(out.total)}
        return grad, shard.groups(PESAState(out.inner, out.t, accum, mean_inner, mean_t)), aux

    hparams = dict(trunc_len=trunc_len, sigma=sigma, num_particles=num_particles, antithetic=antithetic)
    C.scale_hparams(hparams, particle_chunk_size, devices)
    cost = num_particles * trunc_len + trunc_len
    return C.GradientEstimator(init, estimate, "pes_a", hparams, trunc_len, cost)
