"""Random-search baselines from reinforcement learning: ARS and OpenAI-ES.

Both are evolution strategies over whole episodes in their papers (``trunc_len`` equal to
the horizon), and both keep the truncated-ES bookkeeping of `pes.estimators.es` (one
shared inner state; when ``trunc_len`` is shorter than the horizon it is advanced with the
unperturbed theta after each estimate), so they differ from ``es`` only in how the
particles' unroll objectives are turned into a direction:

* `ars`: Augmented Random Search V1-t (Mania, Guy, Recht 2018): antithetic directions,
  keep the ``top_directions`` pairs whose better member scored best, divide by the
  standard deviation of the kept objectives;
* `openai_es`: Salimans et al. 2017: replace the objectives by centred ranks in
  [-0.5, 0.5] (fitness shaping), then the plain ES average; the paper pairs it with Adam,
  which is the outer optimizer's job here.

Signs: an estimator returns a *descent* direction for the loss (minus the reward for a
control task), so SGD with learning rate alpha on it is ARS's ascent step with step size
alpha.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pes import systems
from pes.estimators import _common, particles
from pes.estimators.truncated import ESState


def _shared_start(system, trunc_len, lay, sigma):
    """init/rollout pieces shared by the baselines (same key use as truncated ES)."""
    skip_mean = system.horizon is not None and trunc_len % system.horizon == 0
    spec = particles.Truncation(
        system, lay, trunc_len, particles.FixedClock(system.horizon), keep_state=False
    )

    def init(key, theta):
        del theta
        return ESState(system.init(key), jnp.zeros((), jnp.int32))

    def rollouts(key, theta, state):
        """(eps, per-particle unroll objectives (G, M), mean unroll loss, new state)."""
        noise_key, data_key = _common.split_key(key)
        eps = _common.sample_noise(noise_key, theta, lay.num_groups, sigma)
        t = jnp.broadcast_to(state.t, (lay.num_groups,))
        objectives = particles.perturbed_unroll(
            spec, theta, particles.Groups(eps, None, t), state.inner, data_key
        ).total
        if skip_mean:
            reset_key = systems.step_keys(data_key, trunc_len)[-1, 1]
            new_state = ESState(system.init(reset_key), jnp.zeros((), jnp.int32))
        else:
            inner, t, _, _ = systems.unroll(system, theta, state.inner, state.t, data_key, trunc_len)
            new_state = ESState(inner, t)
        return eps, objectives, new_state

    cost = lay.num_particles * trunc_len + (0 if skip_mean else trunc_len)
    return init, rollouts, cost


def ars(
    system: systems.UnrolledSystem,
    *,
    trunc_len: int,
    sigma: float,
    num_particles: int,
    top_directions: int | None = None,
) -> _common.GradientEstimator:
    """Augmented Random Search, V1-t (no state normalisation), as a descent direction.

    With P = ``num_particles`` = 2 n antithetic particles theta +- sigma u_g, unroll
    objectives L+_g, L-_g, the b = ``top_directions`` pairs with the smallest
    min(L+_g, L-_g) and sigma_L the standard deviation of those 2b objectives:

        g = sum_{g in top b} (L+_g - L-_g) u_g / (b sigma_L).

    Args:
      system: the inner problem.
      trunc_len: unroll length (ARS uses whole episodes: the horizon).
      sigma: exploration noise nu (standard deviation of the perturbations).
      num_particles: 2 n, both members of every pair counted.
      top_directions: b, the number of best pairs kept (default: all n pairs, i.e. V1).
    """
    _common.check_trunc_len("ars", system, trunc_len)
    _common.check_sigma("ars", sigma)
    _common.check_particles("ars", num_particles, True)
    lay = _common.layout(num_particles, True)
    if top_directions is None:
        top_directions = lay.num_groups
    if not _common._is_int(top_directions) or not 1 <= top_directions <= lay.num_groups:
        raise ValueError(
            f"estimator 'ars': top_directions={top_directions!r} is invalid; allowed: an integer "
            f"in [1, {lay.num_groups}] (num_particles / 2)"
        )
    init, rollouts, cost = _shared_start(system, trunc_len, lay, sigma)

    def estimate(key, theta, state):
        eps, objectives, new_state = rollouts(key, theta, state)
        best = jnp.min(objectives, axis=1)
        top = jnp.argsort(best)[:top_directions]
        kept = objectives[top]
        std = jnp.std(kept)
        std = jnp.where(std > 0, std, jnp.ones_like(std))
        diffs = kept[:, 0] - kept[:, 1]
        coeffs = jnp.zeros((lay.num_groups,), objectives.dtype).at[top].set(diffs)
        # eps = sigma u, so u = eps / sigma.
        grad = _common.combine(coeffs / std, eps, 1.0 / (top_directions * sigma), theta)
        return grad, new_state, {"loss": jnp.mean(objectives)}

    hparams = dict(
        trunc_len=trunc_len, sigma=sigma, num_particles=num_particles, top_directions=top_directions
    )
    return _common.GradientEstimator(init, estimate, "ars", hparams, trunc_len, cost)


def centred_ranks(values: jax.Array) -> jax.Array:
    """Ranks of ``values`` (flattened) mapped linearly onto [-0.5, 0.5], same shape."""
    flat = jnp.ravel(values)
    n = flat.shape[0]
    ranks = jnp.argsort(jnp.argsort(flat)).astype(flat.dtype)
    centred = ranks / max(n - 1, 1) - 0.5
    return centred.reshape(jnp.shape(values))


def openai_es(
    system: systems.UnrolledSystem,
    *,
    trunc_len: int,
    sigma: float,
    num_particles: int,
    antithetic: bool = True,
) -> _common.GradientEstimator:
    """OpenAI-ES (Salimans et al. 2017): centred-rank fitness shaping, mirrored sampling.

    g = sum_k r_k u_k / (P sigma), with r_k the centred rank in [-0.5, 0.5] of particle k's
    unroll objective among the P particles and u_k its unit-noise direction.  Use it
    with Adam (``outer_optimizer=adam``) as in the paper.

    Args:
      system: the inner problem.
      trunc_len: unroll length (whole episodes in the paper: the horizon).
      sigma: standard deviation of the perturbations.
      num_particles: P, both members of every antithetic pair counted.
      antithetic: mirrored sampling (+-eps pairs).
    """
    _common.check_trunc_len("openai_es", system, trunc_len)
    _common.check_sigma("openai_es", sigma)
    _common.check_particles("openai_es", num_particles, antithetic)
    lay = _common.layout(num_particles, antithetic)
    init, rollouts, cost = _shared_start(system, trunc_len, lay, sigma)

    def estimate(key, theta, state):
        eps, objectives, new_state = rollouts(key, theta, state)
        shaped = centred_ranks(objectives)  # (G, M)
        coeffs = shaped @ lay.signs(shaped.dtype)  # member m of group g has noise sign_m eps_g
        grad = _common.combine(coeffs, eps, 1.0 / (num_particles * sigma**2), theta)
        return grad, new_state, {"loss": jnp.mean(objectives)}

    hparams = dict(trunc_len=trunc_len, sigma=sigma, num_particles=num_particles, antithetic=antithetic)
    return _common.GradientEstimator(init, estimate, "openai_es", hparams, trunc_len, cost)
