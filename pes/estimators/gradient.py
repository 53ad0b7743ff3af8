"""Gradient-based online estimators: TBPTT, RTRL and UORO.

Each keeps one inner trajectory advanced with the current theta and takes ``trunc_len``
inner steps per estimate (also RTRL and UORO, so inner iterations are counted the same
way for every method; the official Gen-2 code took one step for those two).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from pes import systems
from pes.estimators import _common

PyTree = Any


class TBPTTState(NamedTuple):
    """TBPTT's state: the inner state and the step counter ``t`` within the episode."""

    inner: PyTree
    t: jax.Array


def tbptt(system: systems.UnrolledSystem, *, trunc_len: int) -> _common.GradientEstimator:
    """Truncated backpropagation through time.

    The gradient of the truncation's objective with respect to theta, treating the state
    at the start of the truncation as a constant.  Biased for long-range dependencies;
    exact when ``trunc_len`` equals the horizon and truncations start at step 0.
    """
    _common.check_trunc_len("tbptt", system, trunc_len)

    def init(key, theta):
        del theta
        return TBPTTState(system.init(key), jnp.zeros((), jnp.int32))

    def estimate(key, theta, state):
        _, data_key = _common.split_key(key)
        inner0 = jax.lax.stop_gradient(state.inner)

        def objective(theta):
            inner, t, losses, _ = systems.unroll(system, theta, inner0, state.t, data_key, trunc_len)
            return systems.unroll_objective(system, losses, trunc_len), (inner, t)

        (loss, (inner, t)), grad = jax.value_and_grad(objective, has_aux=True)(theta)
        return grad, TBPTTState(inner, t), {"loss": loss}

    return _common.GradientEstimator(init, estimate, "tbptt", dict(trunc_len=trunc_len), trunc_len, trunc_len)


class RTRLState(NamedTuple):
    """Inner state, step counter and the Jacobian d(float state)/d(theta), (S, P)."""

    inner: PyTree
    t: jax.Array
    jac: jax.Array


def rtrl(system: systems.UnrolledSystem, *, trunc_len: int = 1) -> _common.GradientEstimator:
    """Real-time recurrent learning: exact forward-mode online gradient.

    Carries J = ds/dtheta across steps: the gradient of step loss l_j is
    dl/ds J + dl/dtheta and J <- (df/ds) J + df/dtheta, both from one ``jax.linearize`` of
    the step applied to the P columns of [I; J].  J is reset to 0 with the episode.
    Summed over a whole episode it equals backpropagation through the full unroll.
    Memory and compute grow with S * P, so it is meant for small systems.
    """
    _common.check_trunc_len("rtrl", system, trunc_len)

    def init(key, theta):
        inner = system.init(key)
        fs = _common.flat_step(system, theta, inner)
        s_flat, _ = fs.to_flat(inner)
        # Tangents must match the primals' dtypes: J lives in the state's dtype.
        jac = jnp.zeros((s_flat.size, fs.theta_flat.size), s_flat.dtype)
        return RTRLState(inner, jnp.zeros((), jnp.int32), jac)

    def estimate(key, theta, state):
        _, data_key = _common.split_key(key)
        fs = _common.flat_step(system, theta, state.inner)
        th = fs.theta_flat
        eye = jnp.eye(th.size, dtype=th.dtype)
        weights = systems.step_weights(system, trunc_len, th.dtype)
        keys = systems.step_keys(data_key, trunc_len)

        def body(carry, xs):
            inner, t, jac, grad, total = carry
            key_pair, w = xs
            s_flat, other = fs.to_flat(inner)
            fn = lambda th_, s_: fs.step(th_, s_, other, key_pair[0])
            (new_s, loss), lin, new_other = jax.linearize(fn, th, s_flat, has_aux=True)
            d_s, d_loss = jax.vmap(lin, in_axes=(1, 1), out_axes=(1, 0))(eye, jac)
            grad = grad + w * d_loss.astype(grad.dtype)
            total = total + w * loss.astype(total.dtype)
            new_inner = fs.from_flat(new_s, new_other)
            t = t + 1
            jac = d_s.astype(jac.dtype)
            if system.horizon is not None:
                end = t >= system.horizon
                new_inner = systems.tree_where(end, system.init(key_pair[1]), new_inner)
                jac = jnp.where(end, jnp.zeros_like(jac), jac)
                t = jnp.where(end, jnp.zeros_like(t), t)
            return (new_inner, t, jac, grad, total), None

        zero = jnp.zeros((th.size,), th.dtype)
        carry = (state.inner, state.t, state.jac, zero, jnp.zeros((), th.dtype))
        (inner, t, jac, grad, total), _ = jax.lax.scan(body, carry, (keys, weights))
        grad = jax.tree.map(lambda g, ref: g.astype(jnp.result_type(ref)), fs.unravel_theta(grad), theta)
        return grad, RTRLState(inner, t, jac), {"loss": total}

    return _common.GradientEstimator(init, estimate, "rtrl", dict(trunc_len=trunc_len), trunc_len, trunc_len)


class UOROState(NamedTuple):
    """Inner state, step counter and the rank-one factors J ~ s_tilde theta_tilde^T."""

    inner: PyTree
    t: jax.Array
    s_tilde: jax.Array
    theta_tilde: jax.Array


def uoro(system: systems.UnrolledSystem, *, trunc_len: int = 1) -> _common.GradientEstimator:
    """Unbiased online recurrent optimization (Tallec & Ollivier, 2017).

    Keeps a rank-one unbiased estimate s_tilde theta_tilde^T of the RTRL Jacobian.  Per
    step, with a random sign vector nu:
      grad += (dl/ds s_tilde) theta_tilde + dl/dtheta,
      s_tilde <- rho0 (df/ds) s_tilde + rho1 nu,
      theta_tilde <- theta_tilde / rho0 + (nu^T df/dtheta) / rho1,
    with the variance-minimising rho0, rho1.  The tangent (df/ds) s_tilde comes from
    ``jax.jvp`` (the official code used a float32 finite difference).
    """
    _common.check_trunc_len("uoro", system, trunc_len)
    tiny = 1e-7

    def init(key, theta):
        inner = system.init(key)
        fs = _common.flat_step(system, theta, inner)
        s_flat, _ = fs.to_flat(inner)
        # s_tilde lives in the state's dtype, theta_tilde in theta's (jvp/vjp need matching dtypes).
        return UOROState(
            inner,
            jnp.zeros((), jnp.int32),
            jnp.zeros((s_flat.size,), s_flat.dtype),
            jnp.zeros((fs.theta_flat.size,), fs.theta_flat.dtype),
        )

    def estimate(key, theta, state):
        nu_key, data_key = _common.split_key(key)
        fs = _common.flat_step(system, theta, state.inner)
        th = fs.theta_flat
        dtype = th.dtype
        weights = systems.step_weights(system, trunc_len, dtype)
        keys = systems.step_keys(data_key, trunc_len)
        nu_keys = jax.random.split(nu_key, trunc_len)

        def body(carry, xs):
            inner, t, s_tl, th_tl, grad, total = carry
            key_pair, nu_key, w = xs
            new_inner, loss, (fs_s, dl_s, nu, nu_f_th, dl_th) = _uoro_products(
                fs, inner, s_tl, key_pair[0], nu_key
            )
            grad = grad + w * (dl_s.astype(dtype) * th_tl + dl_th)
            total = total + w * loss.astype(dtype)
            rho0 = jnp.sqrt((jnp.linalg.norm(th_tl) + tiny) / (jnp.linalg.norm(fs_s) + tiny))
            rho1 = jnp.sqrt((jnp.linalg.norm(nu_f_th) + tiny) / (jnp.linalg.norm(nu) + tiny))
            s_tl = (rho0 * fs_s + rho1 * nu).astype(s_tl.dtype)
            th_tl = (th_tl / rho0 + nu_f_th / rho1).astype(th_tl.dtype)
            t = t + 1
            if system.horizon is not None:
                end = t >= system.horizon
                new_inner = systems.tree_where(end, system.init(key_pair[1]), new_inner)
                s_tl = jnp.where(end, jnp.zeros_like(s_tl), s_tl)
                th_tl = jnp.where(end, jnp.zeros_like(th_tl), th_tl)
                t = jnp.where(end, jnp.zeros_like(t), t)
            return (new_inner, t, s_tl, th_tl, grad, total), None

        carry = (
            state.inner,
            state.t,
            state.s_tilde,
            state.theta_tilde,
            jnp.zeros_like(state.theta_tilde),
            jnp.zeros((), dtype),
        )
        (inner, t, s_tl, th_tl, grad, total), _ = jax.lax.scan(body, carry, (keys, nu_keys, weights))
        grad = jax.tree.map(lambda g, ref: g.astype(jnp.result_type(ref)), fs.unravel_theta(grad), theta)
        return grad, UOROState(inner, t, s_tl, th_tl), {"loss": total}

    return _common.GradientEstimator(init, estimate, "uoro", dict(trunc_len=trunc_len), trunc_len, trunc_len)


def _uoro_products(fs: _common.FlatStep, inner, s_tl, step_key, nu_key):
    """One UORO step's state and loss, and its products with the tangents.

    Returns (new inner state, loss, ((df/ds) s_tilde, (dl/ds) s_tilde, nu, nu^T df/dtheta,
    dl/dtheta)), nu a random sign vector: the forward tangent along s_tilde from ``jax.jvp``,
    the reverse products with theta from one ``jax.vjp``.
    """
    th = fs.theta_flat
    s_flat, other = fs.to_flat(inner)
    fn = lambda th_, s_: fs.step(th_, s_, other, step_key)
    (new_s, loss), (fs_s, dl_s), new_other = jax.jvp(
        fn, (th, s_flat), (jnp.zeros_like(th), s_tl), has_aux=True
    )
    _, vjp, _ = jax.vjp(fn, th, s_flat, has_aux=True)
    nu = jax.random.rademacher(nu_key, new_s.shape, new_s.dtype)
    nu_f_th, _ = vjp((nu, jnp.zeros((), loss.dtype)))
    dl_th, _ = vjp((jnp.zeros_like(new_s), jnp.ones((), loss.dtype)))
    return fs.from_flat(new_s, new_other), loss, (fs_s, dl_s, nu, nu_f_th, dl_th)
