"""Exact mean and variance of antithetic ES / PES / NRES on a linear-quadratic system, given keys.

Used by the statistical tests (tests/test_unbiasedness.py) as a reference that is written
from the algorithms, not from `pes/`.

Setting.  A window of U truncations of K steps (J = U K steps).  Every perturbation an
estimator draws for a group is a *slot* z_s ~ N(0, I) (times sigma).  At step j a particle
follows theta + sign * sigma * z_{slot(j)}, and its loss is weighted in the estimate by the
sum of the slots in W(j) (PES: every perturbation the step's episode has seen, including
this truncation's; NRES: the episode's one perturbation; ES: this truncation's).  For a
system whose step losses are quadratic in theta given the keys (linear dynamics, quadratic
loss), the pair's loss difference is exactly linear in the slots,

    l_j(+) - l_j(-) = 2 sigma sum_v G_jv . z_v,     G_jv = d l_j / d theta_v

(theta_v: the parameters used at the steps of slot v, derivatives along the unperturbed
trajectory with the same keys), so one group's window sum of estimates is the bilinear form

    X = sum_{v,w} (c_vw . z_v) z_w,    c_vw = sum_{j: w in W(j)} G_jv.

With Isserlis' theorem, E[X] = sum_v c_vv and the trace of its covariance is
P sum_{vw} ||c_vw||^2 + sum_{vw} c_vw . c_wv (P = number of parameters).  The estimate
averages G groups: E = mean_g E[X_g], E||g - E||^2 = sum_g Var(X_g) / G^2.  For PES E is
the gradient of the window's total loss (unbiasedness); for truncated ES it is the sum of
each truncation's own gradient with the state at its start held fixed (the truncation bias).

The weight sets W(j) are where PES bookkeeping bugs live (an accumulator never reset, steps
after a reset weighted by the old accumulator): they leave E unchanged but add slots to
W(j), which shows in the variance.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from pes.systems import UnrolledSystem


@functools.cache
def keyed_lq(dim: int = 3, horizon: int = 8, decay: float = 0.8, noise: float = 0.5, init_scale: float = 1.0):
    """Linear dynamics, quadratic loss; data noise from the step key, initial state from the reset key.

    s0 = init_scale * N(0, I) (reset key);  s' = decay s + theta + noise * x, x ~ N(0, I) (step key);
    loss = 0.5 ||s' - 1||^2.  Losses are quadratic in theta for fixed keys.
    """

    def init(key):
        return init_scale * jax.random.normal(key, (dim,), jnp.float64)

    def step(theta, s, key):
        s_new = decay * s + theta + noise * jax.random.normal(key, (dim,), jnp.float64)
        return s_new, 0.5 * jnp.sum((s_new - 1.0) ** 2)

    return UnrolledSystem(init=init, step=step, horizon=horizon, unroll_loss="sum")


# ----------------------------------------------------------------------------- the algorithms' bookkeeping


def schedule(name: str, horizon: int, trunc_len: int, num_truncations: int, offset: int, stagger: bool):
    """Slots of one group whose episode phase at the window start is ``offset``.

    Returns (slot_of_step (J,), weights (J, S) 0/1, stop (J,) bool, num_slots): the slot whose
    perturbation step j uses, the slots its loss is weighted by, and whether the state's
    dependence on earlier perturbations is cut before step j (truncated ES restarts every
    truncation from the unperturbed state).  Slot 0 is the perturbation in force at the window
    start (PES/NRES: the burn-in's or the first draw; for PES only when the burn-in took
    steps); slot 1 + u is truncation u's draw.
    """
    k, t_len = trunc_len, horizon
    steps = num_truncations * k
    num_slots = num_truncations + 1
    if name.startswith("gpes/"):
        blocks = None if name == "gpes/None" else int(name.split("/")[1])
        return _gpes_schedule(blocks, t_len, k, num_truncations, offset, stagger)
    slot = np.zeros(steps, np.int32)
    weights = np.zeros((steps, num_slots))
    stop = np.zeros(steps, bool)
    episode = [(offset + j) // t_len for j in range(steps)]  # 0: the episode in progress at the start
    for j in range(steps):
        u = j // k
        if name == "es":
            slot[j] = 1 + u
            weights[j, 1 + u] = 1.0
            stop[j] = j % k == 0
        elif name == "pes":
            slot[j] = 1 + u
            seen = {
                1 + v
                for v in range(u + 1)
                if any(episode[i] == episode[j] for i in range(v * k, min((v + 1) * k, j + 1)))
            }
            if episode[j] == 0 and offset > 0 and stagger:
                seen.add(0)  # the burn-in's perturbation is part of the first episode's history
            weights[j, sorted(seen)] = 1.0
        elif name == "nres":
            if episode[j] == 0:
                slot[j] = 0
            else:  # the draw of the truncation in which the previous episode ended
                end = episode[j] * t_len - offset - 1
                slot[j] = 1 + end // k
            weights[j, slot[j]] = 1.0
        else:
            raise ValueError(name)
    return slot, weights, stop, num_slots


def _gpes_schedule(blocks, horizon, k, num_truncations, offset, stagger):
    """GPES with noise blocks of ``blocks`` truncations (None: one block per episode).

    A block in force for ``blocks`` truncations is replaced at a truncation start by that
    truncation's draw, which joins the accumulator; an episode that ends inside a truncation
    continues with that truncation's draw as its first block (accumulator = that draw); one
    that ends on the last step starts its first block at the next truncation.  With one block
    per episode the accumulator is the block (NRES).  Staggered pairs' burn-in runs under
    slot 0, a block of age ceil(offset / K) (capped at ``blocks``).
    """
    steps = num_truncations * k
    slot = np.zeros(steps, np.int32)
    weights = np.zeros((steps, num_truncations + 1))
    if blocks is None:
        block, accum, age = 0, {0}, 0
    elif stagger and offset > 0:
        block, accum, age = 0, {0}, min(blocks, -(-offset // k))
    else:
        block, accum, age = None, set(), blocks
    t = offset
    for u in range(num_truncations):
        refreshed = blocks is not None and age >= blocks
        if refreshed:
            block, accum = 1 + u, accum | {1 + u}
        ended = last = False
        for j in range(u * k, (u + 1) * k):
            slot[j] = block
            weights[j, sorted(accum)] = 1.0
            t += 1
            last = False
            if t >= horizon:
                t, block, accum, ended, last = 0, 1 + u, {1 + u}, True, True
        if blocks is not None:
            if last:
                block, accum, age = None, set(), blocks
            else:
                age = 1 if (ended or refreshed) else age + 1
    return slot, weights, np.zeros(steps, bool), num_truncations + 1


def all_schedules(name, horizon, trunc_len, num_truncations, stagger):
    """`schedule` for every offset 0..T-1, stacked (index by a group's offset)."""
    out = [schedule(name, horizon, trunc_len, num_truncations, o, stagger) for o in range(horizon)]
    slots, weights, stops, num_slots = zip(*out)
    return np.stack(slots), np.stack(weights), np.stack(stops), num_slots[0]


# ----------------------------------------------------------------------------- derivatives along the keys


def group_moments(
    system, theta, start, burn_keys, offset, step_keys, step_weights, slot, weights, stop, num_slots
):
    """(E[X], Var(X)) of one group (see the module docstring), JAX, vmappable.

    start: the state before the burn-in; burn_keys (T-1, 2): the burn-in's keys (its steps use
    slot 0 and take ``offset`` steps); step_keys (J, 2): the window's (step, reset) keys;
    step_weights (J,): the unroll-loss weight of each step ('sum': ones).
    """
    horizon = system.horizon
    p = theta.shape[0]

    def losses(deltas):
        def burn(s, xs):
            i, key_pair = xs
            new, _ = system.step(theta + deltas[0], s, key_pair[0])
            return jnp.where(i < offset, new, s), None

        s, _ = jax.lax.scan(burn, start, (jnp.arange(burn_keys.shape[0]), burn_keys))

        def body(carry, xs):
            s, t = carry
            key_pair, sl, cut = xs
            s = jnp.where(cut, jax.lax.stop_gradient(s), s)
            s, loss = system.step(theta + deltas[sl], s, key_pair[0])
            t = t + 1
            end = t >= horizon
            s = jnp.where(end, system.init(key_pair[1]), s)
            return (s, jnp.where(end, 0, t)), loss

        _, out = jax.lax.scan(body, (s, offset), (step_keys, slot, stop))
        return out * step_weights

    jac = jax.jacrev(losses)(jnp.zeros((num_slots, p), theta.dtype))  # (J, S, P)
    c = jnp.einsum("jw,jvp->vwp", weights, jac)
    mean = jnp.einsum("vvp->p", c)
    var = p * jnp.sum(c**2) + jnp.einsum("vwp,wvp->", c, c)
    return mean, var


# ----------------------------------------------------------------------------- the library, sampled


def window_keys(root_key, reps, num_truncations):
    """(init keys (R,), estimate keys (R, U)) of R independent windows."""
    keys = jax.random.split(root_key, reps)
    init_keys = jax.vmap(lambda k: jax.random.fold_in(k, 10_000))(keys)
    est_keys = jax.vmap(lambda k: jax.vmap(lambda i: jax.random.fold_in(k, i))(jnp.arange(num_truncations)))(
        keys
    )
    return init_keys, est_keys


def sample_window_sums(est, theta, init_keys, est_keys):
    """(R, P): each window's sum of the estimator's U estimates with theta fixed."""

    def one(init_key, keys):
        state = est.init(init_key, theta)

        def body(state, key):
            grad, state, _ = est.estimate(key, theta, state)
            return state, grad

        _, grads = jax.lax.scan(body, state, keys)
        return jnp.sum(grads, axis=0)

    return np.asarray(jax.jit(jax.vmap(one))(init_keys, est_keys))


def reference_moments(
    name,
    system,
    theta,
    init_keys,
    est_keys,
    *,
    trunc_len,
    num_particles,
    stagger=False,
    antithetic=True,
    weights_of=None,
):
    """(R, P) exact means and (R,) exact E||g - mean||^2 of the estimator's window sums, per window.

    Uses the documented key discipline: ``init`` splits its key into (state, offset, noise,
    burn-in) keys for PES and NRES, (state, offset, burn-in) for staggered ES, and truncated
    ES without stagger starts from ``init(key)``; an estimate's data key is the second half
    of ``split(key)``; K steps use ``split(data_key, (K, 2))``; burn-in steps use
    ``split(burn_key, (T - 1, 2))``; offsets are ``randint(offset_key, (G,), 0, T, int32)``.
    Without antithetic pairs the means still hold (a loss quadratic in the perturbation adds
    only odd moments), the variances do not (returned as None).  ``weights_of`` (default
    ``name``): the estimator whose slots and weights are used, so that, for example, the
    whole-window gradient of PES can be computed along truncated ES's trajectories.
    """
    horizon = system.horizon
    num_truncations = est_keys.shape[1]
    groups = num_particles // 2 if antithetic else num_particles
    sched = all_schedules(weights_of or name, horizon, trunc_len, num_truncations, stagger)
    slots, weights, stops, num_slots = sched
    if system.unroll_loss == "sum":
        step_weights = np.ones(num_truncations * trunc_len)
    else:
        step_weights = np.tile(np.eye(trunc_len)[-1], num_truncations)
    keys = "es" if name == "es" else "pes"  # PES and NRES initialise alike
    means, variances = _moments(
        system,
        keys,
        stagger,
        groups,
        trunc_len,
        num_slots,
        theta,
        init_keys,
        est_keys,
        slots,
        weights,
        stops,
        step_weights,
    )
    return np.asarray(means), (np.asarray(variances) if antithetic else None)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def _moments(
    system, keys, stagger, groups, k, num_slots, theta, init_keys, est_keys, slots, weights, stops, sw
):
    horizon = system.horizon

    def one(init_key, keys_r):
        if keys == "es":
            if stagger:
                state_key, offset_key, burn_key = jax.random.split(init_key, 3)
            else:
                state_key, offset_key, burn_key = init_key, init_key, init_key
        else:
            state_key, offset_key, _, burn_key = jax.random.split(init_key, 4)
        if stagger:
            offsets = jax.random.randint(offset_key, (groups,), 0, horizon, jnp.int32)
        else:
            offsets = jnp.zeros((groups,), jnp.int32)
        start = system.init(state_key)
        burn_keys = jax.random.split(burn_key, (max(horizon - 1, 1), 2))
        data_keys = jax.vmap(lambda key: jax.random.split(key)[1])(keys_r)
        step_keys = jax.vmap(lambda d: jax.random.split(d, (k, 2)))(data_keys).reshape(-1, 2)

        def group(offset):
            return group_moments(
                system,
                theta,
                start,
                burn_keys,
                offset,
                step_keys,
                sw,
                slots[offset],
                weights[offset],
                stops[offset],
                num_slots,
            )

        if stagger:
            means, variances = jax.vmap(group)(offsets)
            return jnp.mean(means, axis=0), jnp.sum(variances) / groups**2
        mean, var = group(offsets[0])  # every group follows the same trajectory
        return mean, var / groups

    return jax.vmap(one)(init_keys, est_keys)


# ----------------------------------------------------------------------------- statistics

Z = 5.0  # rejection threshold in standard errors (two-sided, per coordinate: p ~ 6e-7)
Z_POWER = 1.645  # a bias this many more standard errors away is caught 95 % of the time


class Check:
    """Paired comparison of sampled window sums with their exact conditional moments."""

    def __init__(self, samples, means, variances=None):
        self.d = samples - means  # estimator minus its exact conditional mean, per window
        self.reps = samples.shape[0]
        self.target = means.mean(axis=0)  # the average gradient the windows estimate
        self.se = self.d.std(axis=0, ddof=1) / math.sqrt(self.reps)
        self.z = self.d.mean(axis=0) / self.se
        self.variances = variances
        if variances is not None:
            q = np.sum(self.d**2, axis=1) - variances
            self.var_ratio = np.sum(self.d**2, axis=1).mean() / variances.mean()
            self.var_se = q.std(ddof=1) / math.sqrt(self.reps) / variances.mean()
            self.var_z = q.mean() / (q.std(ddof=1) / math.sqrt(self.reps))

    @property
    def detectable_bias(self) -> float:
        """Smallest ||bias|| / ||target||, in any direction, rejected with 95 % probability."""
        return (Z + Z_POWER) * float(np.max(self.se)) / float(np.linalg.norm(self.target))

    @property
    def detectable_excess_variance(self) -> float:
        """Smallest relative excess of E||g - mean||^2 rejected with 95 % probability."""
        return (Z + Z_POWER) * self.var_se

    def summary(self) -> str:
        out = f"z={np.round(self.z, 2)} detectable bias {self.detectable_bias:.3f}"
        if self.variances is not None:
            out += (
                f"; variance ratio {self.var_ratio:.4f} (z={self.var_z:.2f}), "
                f"detectable excess {self.detectable_excess_variance:.3f}"
            )
        return out
