"""Independent reference ES / PES / NRES: plain NumPy float64, a loop over particles and steps.

Written from the algorithms (Vicol et al. 2021, Alg. 1 for PES; truncated ES; noise-reuse ES
of Li et al. 2023), not from `pes/`: nothing here imports the library's estimators.  The
only things shared with the library are the documented interfaces:

* the system (``init(key)``, ``step(theta, state, key)``, ``horizon``, ``unroll_loss``),
  called one particle and one step at a time;
* the key discipline of `pes.systems`: an estimate splits its key into (noise key, data key);
  K steps driven by a data key use ``jax.random.split(data_key, (K, 2))``, step j calls
  ``step`` with row j's first key and, if the episode ends at step j, re-initialises with
  ``init`` of row j's second key; every particle sees the same keys;
* the noise: one draw per antithetic group, ``sigma * normal`` leaf by leaf over theta with
  ``jax.random.split(noise_key, number of leaves)`` (`draw_noise`);
* the initialisation keys of the staggered and noise-reuse estimators (`init`).

The noise is an explicit argument of every truncation (`truncation(theta, eps, keys)`), so
a test can also feed noise of its own.  Each particle is advanced by a Python loop over
steps; the PES accumulator is updated step by step as the algorithm states it: a particle's
loss at a step is weighted by the sum of every perturbation its current episode has seen,
including this truncation's; at an episode end the sum restarts, and the next step (if the
truncation has one) starts it again from this truncation's perturbation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import numpy as np

# ----------------------------------------------------------------------------- helpers


class Flat:
    """theta as a flat float64 vector and back (leaf order of ``jax.tree.flatten``)."""

    def __init__(self, theta):
        leaves, self.treedef = jax.tree.flatten(theta)
        self.shapes = [np.shape(x) for x in leaves]
        self.dtypes = [np.asarray(x).dtype for x in leaves]
        self.sizes = [int(np.prod(s)) for s in self.shapes]

    def ravel(self, tree) -> np.ndarray:
        return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])

    def unravel(self, vec):
        out, i = [], 0
        for shape, size, dtype in zip(self.shapes, self.sizes, self.dtypes):
            out.append(np.asarray(vec[i : i + size], dtype).reshape(shape))
            i += size
        return jax.tree.unflatten(self.treedef, out)

    @property
    def size(self) -> int:
        return sum(self.sizes)


def to_numpy(tree):
    return jax.tree.map(lambda x: np.array(x), tree)


def split_estimate_key(key):
    """(noise key, data key) of one estimate."""
    noise_key, data_key = jax.random.split(key)
    return noise_key, data_key


def step_keys(data_key, num_steps):
    """[(step key, reset key)] * num_steps of an unroll driven by ``data_key``."""
    keys = jax.random.split(data_key, (num_steps, 2))
    return [(keys[j, 0], keys[j, 1]) for j in range(num_steps)]


def draw_noise(noise_key, flat: Flat, num_groups: int, sigma: float) -> np.ndarray:
    """(G, P) float64: per group, sigma * N(0, 1) leaf by leaf (one key per leaf)."""
    keys = jax.random.split(noise_key, len(flat.shapes))
    leaves = [
        sigma * np.asarray(jax.random.normal(k, (num_groups,) + shape, dtype), np.float64)
        for k, shape, dtype in zip(keys, flat.shapes, flat.dtypes)
    ]
    return np.concatenate([x.reshape(num_groups, -1) for x in leaves], axis=1)


_COMPILED: dict = {}  # system -> (jitted step, jitted init): one compilation per system


class Stepper:
    """One particle, one step: the system's ``step`` and ``init`` on NumPy values."""

    def __init__(self, system, flat: Flat):
        self.system, self.flat = system, flat
        if system not in _COMPILED:
            _COMPILED[system] = (jax.jit(system.step), jax.jit(system.init))
        self._step, self._init = _COMPILED[system]

    def step(self, theta_vec, state, key):
        new_state, loss = self._step(self.flat.unravel(theta_vec), state, key)
        return to_numpy(new_state), float(loss)

    def init(self, key):
        return to_numpy(self._init(key))

    def weight(self, j, num_steps) -> float:
        """Step j's weight in a truncation's objective: 'sum' -> 1; 'last' -> the last step only."""
        if self.system.unroll_loss == "sum":
            return 1.0
        return 1.0 if j == num_steps - 1 else 0.0

    def ends(self, t) -> bool:
        """After a step that brought the episode's counter to ``t``: did the episode end?"""
        return self.system.horizon is not None and t >= self.system.horizon


# ----------------------------------------------------------------------------- estimators


@dataclass
class Particle:
    state: object
    sign: float


class _Base:
    def __init__(self, system, theta, *, trunc_len, sigma, num_particles, antithetic=True, stagger=False):
        self.flat = Flat(theta)
        self.run = Stepper(system, self.flat)
        self.horizon = system.horizon
        self.k, self.sigma, self.n = trunc_len, sigma, num_particles
        self.antithetic, self.stagger = antithetic, stagger
        self.members = 2 if antithetic else 1
        self.groups = num_particles // self.members
        self.signs = [1.0, -1.0][: self.members]
        self.scale = 1.0 / (num_particles * sigma**2)

    def noise(self, noise_key):
        return draw_noise(noise_key, self.flat, self.groups, self.sigma)

    def offsets(self, offset_key):
        """Each group's starting step, uniform on 0..T-1 (int32 draws)."""
        draws = jax.random.randint(offset_key, (self.groups,), 0, self.horizon, np.int32)
        return [int(x) for x in np.asarray(draws)]

    def burn_in(self, theta_vec, state, offset, burn_key):
        """``offset`` steps with a fixed theta from ``state``: burn-in keys step_keys(burn_key, T - 1)."""
        keys = step_keys(burn_key, self.horizon - 1) if self.horizon > 1 else []
        for j in range(offset):
            state, _ = self.run.step(theta_vec, state, keys[j][0])
        return state


class RefPES(_Base):
    """Persistent ES.  State: per particle an inner state, per group a counter and xi."""

    def init(self, key, theta):
        state_key, offset_key, noise_key, burn_key = jax.random.split(key, 4)
        th = self.flat.ravel(theta)
        start = self.run.init(state_key)
        self.t = [0] * self.groups
        self.xi = np.zeros((self.groups, self.flat.size))
        self.particles = [[Particle(start, s) for s in self.signs] for _ in range(self.groups)]
        if self.stagger and self.horizon > 1:
            eps = self.noise(noise_key)
            for g, off in enumerate(self.offsets(offset_key)):
                for p in self.particles[g]:
                    p.state = self.burn_in(th + p.sign * eps[g], start, off, burn_key)
                self.t[g] = off
                if off > 0:  # the burn-in's perturbation is part of the episode's history
                    self.xi[g] = eps[g]
        return self

    def estimate(self, key, theta):
        noise_key, data_key = split_estimate_key(key)
        return self.truncation(self.flat.ravel(theta), self.noise(noise_key), step_keys(data_key, self.k))

    def truncation(self, theta_vec, eps, keys):
        grad = np.zeros(self.flat.size)
        self.losses = np.zeros((self.groups, self.members))
        for g in range(self.groups):
            t_end, xi_end = self.t[g], None
            for m, p in enumerate(self.particles[g]):
                t, xi = self.t[g], self.xi[g].copy()
                fresh = True  # this truncation's perturbation not yet in xi
                for j, (step_key, reset_key) in enumerate(keys):
                    if fresh:
                        xi = xi + eps[g]
                        fresh = False
                    p.state, loss = self.run.step(theta_vec + p.sign * eps[g], p.state, step_key)
                    w = self.run.weight(j, self.k)
                    self.losses[g, m] += w * loss
                    grad += w * loss * p.sign * xi  # member m carries sign_m * xi
                    t += 1
                    if self.run.ends(t):
                        t = 0
                        p.state = self.run.init(reset_key)
                        xi = np.zeros_like(xi)  # a new episode has seen no perturbation yet ...
                        fresh = True  # ... until its next step, taken with this truncation's eps
                t_end, xi_end = t, xi
            self.t[g], self.xi[g] = t_end, xi_end
        return grad * self.scale

    def inner(self):
        """Leaves stacked (G, M, ...), as the library lays them out."""
        return jax.tree.map(
            lambda *x: np.stack(x).reshape((self.groups, self.members) + np.shape(x[0])),
            *[p.state for ps in self.particles for p in ps],
        )


class RefES(_Base):
    """Truncated ES: particles start each truncation from the unperturbed state(s)."""

    def init(self, key, theta):
        th = self.flat.ravel(theta)
        if not self.stagger:
            self.states, self.t = [self.run.init(key)], [0]
            return self
        state_key, offset_key, burn_key = jax.random.split(key, 3)
        start = self.run.init(state_key)
        self.t = self.offsets(offset_key)
        self.states = [self.burn_in(th, start, off, burn_key) for off in self.t]
        return self

    def estimate(self, key, theta):
        noise_key, data_key = split_estimate_key(key)
        return self.truncation(self.flat.ravel(theta), self.noise(noise_key), step_keys(data_key, self.k))

    def _unroll(self, theta_vec, state, t, keys):
        total = 0.0
        for j, (step_key, reset_key) in enumerate(keys):
            state, loss = self.run.step(theta_vec, state, step_key)
            total += self.run.weight(j, self.k) * loss
            t += 1
            if self.run.ends(t):
                t, state = 0, self.run.init(reset_key)
        return state, t, total

    def truncation(self, theta_vec, eps, keys):
        grad = np.zeros(self.flat.size)
        self.losses = np.zeros((self.groups, self.members))
        for g in range(self.groups):
            i = g if self.stagger else 0
            for m, sign in enumerate(self.signs):
                _, _, total = self._unroll(theta_vec + sign * eps[g], self.states[i], self.t[i], keys)
                self.losses[g, m] = total
                grad += total * sign * eps[g]
        for i in range(len(self.states)):  # advance the unperturbed state(s) with theta
            self.states[i], self.t[i], _ = self._unroll(theta_vec, self.states[i], self.t[i], keys)
        return grad * self.scale

    def inner(self):
        if not self.stagger:
            return self.states[0]
        return jax.tree.map(lambda *x: np.stack(x), *self.states)


class RefNRES(_Base):
    """Noise-reuse ES: one perturbation per group and episode, reused by every truncation.

    One fresh draw per truncation: the first episode that starts inside a truncation takes
    it from its first step on (so does any further episode started in the same truncation),
    and keeps it for its later truncations.
    """

    def init(self, key, theta):
        state_key, offset_key, noise_key, burn_key = jax.random.split(key, 4)
        th = self.flat.ravel(theta)
        start = self.run.init(state_key)
        self.eps = self.noise(noise_key)
        self.t = [0] * self.groups
        self.particles = [[Particle(start, s) for s in self.signs] for _ in range(self.groups)]
        if self.stagger and self.horizon > 1:
            for g, off in enumerate(self.offsets(offset_key)):
                for p in self.particles[g]:
                    p.state = self.burn_in(th + p.sign * self.eps[g], start, off, burn_key)
                self.t[g] = off
        return self

    def estimate(self, key, theta):
        noise_key, data_key = split_estimate_key(key)
        return self.truncation(self.flat.ravel(theta), self.noise(noise_key), step_keys(data_key, self.k))

    def truncation(self, theta_vec, fresh, keys):
        grad = np.zeros(self.flat.size)
        self.losses = np.zeros((self.groups, self.members))
        new_eps = self.eps.copy()
        for g in range(self.groups):
            t_end = self.t[g]
            for m, p in enumerate(self.particles[g]):
                t, e = self.t[g], self.eps[g]
                for j, (step_key, reset_key) in enumerate(keys):
                    p.state, loss = self.run.step(theta_vec + p.sign * e, p.state, step_key)
                    w = self.run.weight(j, self.k)
                    self.losses[g, m] += w * loss
                    grad += w * loss * p.sign * e
                    t += 1
                    if self.run.ends(t):
                        t, p.state, e = 0, self.run.init(reset_key), fresh[g]
                t_end, new_eps[g] = t, e
            self.t[g] = t_end
        self.eps = new_eps
        return grad * self.scale

    inner = RefPES.inner


class RefGPES(_Base):
    """Generalised PES (GPES-K): a new perturbation every m = noise_every / K truncations.

    Per group: the accumulator xi, the current block's perturbation e and the block's age
    (truncations it has been used in).  At a truncation start a block used in m truncations
    is replaced by this truncation's draw, which is added to xi.  Each step runs theta +/- e
    and weights its loss by xi.  An episode that ends inside the truncation continues from
    the next step with this truncation's draw as its first block (xi = that draw, age 1 at
    the truncation's end); one that ends on the last step starts its first block at the next
    truncation (xi = 0, age m).  With one block per episode (noise_every None or >= T) the
    block is drawn in advance: the first at ``init``, later ones are the draw of the
    truncation in which the previous episode ended (NRES), and xi is the block.  Staggered
    pairs' burn-in runs under the episode's first block, of age ceil(offset / K) capped at m.
    """

    def __init__(self, system, theta, *, noise_every, **kw):
        super().__init__(system, theta, **kw)
        h = self.horizon
        if noise_every is None or (h is not None and noise_every >= h):
            self.m = None
        else:
            self.m = noise_every // self.k

    def init(self, key, theta):
        state_key, offset_key, noise_key, burn_key = jax.random.split(key, 4)
        th = self.flat.ravel(theta)
        start = self.run.init(state_key)
        self.t = [0] * self.groups
        self.particles = [[Particle(start, s) for s in self.signs] for _ in range(self.groups)]
        first = self.noise(noise_key)  # one draw per group (the burn-in's / NRES's first block)
        zeros = np.zeros((self.groups, self.flat.size))
        if self.m is None:
            self.e, self.age = first.copy(), [0] * self.groups
        else:
            self.e, self.age = zeros.copy(), [self.m] * self.groups
        self.xi = self.e.copy()
        if self.stagger and self.horizon > 1:
            for g, off in enumerate(self.offsets(offset_key)):
                for p in self.particles[g]:
                    p.state = self.burn_in(th + p.sign * first[g], start, off, burn_key)
                self.t[g] = off
                if self.m is not None and off > 0:
                    self.e[g] = self.xi[g] = first[g]
                    self.age[g] = min(self.m, -(-off // self.k))
        return self

    def estimate(self, key, theta):
        noise_key, data_key = split_estimate_key(key)
        return self.truncation(self.flat.ravel(theta), self.noise(noise_key), step_keys(data_key, self.k))

    def truncation(self, theta_vec, fresh, keys):
        grad = np.zeros(self.flat.size)
        self.losses = np.zeros((self.groups, self.members))
        for g in range(self.groups):
            refresh = self.m is not None and self.age[g] >= self.m
            e0 = fresh[g] if refresh else self.e[g]
            xi0 = self.xi[g] + fresh[g] if refresh else self.xi[g]
            for m_idx, p in enumerate(self.particles[g]):
                t, e, xi, ended, last = self.t[g], e0, xi0, False, False
                for j, (step_key, reset_key) in enumerate(keys):
                    p.state, loss = self.run.step(theta_vec + p.sign * e, p.state, step_key)
                    w = self.run.weight(j, self.k)
                    self.losses[g, m_idx] += w * loss
                    grad += w * loss * p.sign * xi
                    t += 1
                    last = False
                    if self.run.ends(t):
                        t, p.state = 0, self.run.init(reset_key)
                        e, xi, ended, last = fresh[g], fresh[g], True, True
                t_end, e_end, xi_end, ended_g, last_g = t, e, xi, ended, last
            self.t[g] = t_end
            if self.m is None:
                self.e[g] = self.xi[g] = e_end
            elif last_g:  # the next episode's first block starts at the next truncation
                self.e[g], self.xi[g], self.age[g] = 0.0, 0.0, self.m
            else:
                self.e[g], self.xi[g] = e_end, xi_end
                self.age[g] = 1 if (ended_g or refresh) else self.age[g] + 1
        return grad * self.scale

    inner = RefPES.inner


REFERENCES = {"pes": RefPES, "es": RefES, "nres": RefNRES, "gpes": RefGPES}


def lcm(a, b):
    return a * b // math.gcd(a, b)
