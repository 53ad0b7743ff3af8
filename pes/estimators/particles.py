"""The particle engine of the evolution-strategies estimators (ES, PES, NRES, GPES-K, PES-A).

N particles are G noise groups of M members (an antithetic pair, or one particle).  The engine
is a few small pure parts that every estimator family composes in its factory:

* a clock (`FixedClock` for a fixed horizon, `DrawnClock` for horizons drawn from a
  `pes.horizons` schedule): when each group's episode ends;
* `step_or_reset`: one step of every particle, then a fresh state where an episode ended;
* `unroll`: a scan of that over one truncation of K steps, summarised as `Unrolled` (the
  particles' unroll objectives, the part before the first episode end, the end flags);
* `perturbed_unroll`: theta + sign * eps for every member, then `unroll`;
* wrappers that leave every particle's numbers unchanged: `chunked` (a ``lax.map`` over
  chunks of groups), the sharding constraints of `pes.sharding` (the group axis over
  devices) and `staggered` (an ``init`` wrapper: groups start at random steps of their
  episode through a burn-in under their own perturbation);
* `setup`: the validation and planning every ES-family factory starts with.

The estimator families (`truncated`, `persistent`, `noise_reuse`, `pes_analytic`) add only
their state and one pure update from an `Outcome`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from pes import horizons, systems
from pes.estimators import _common
from pes.sharding import ParticleSharding, resolve_devices

PyTree = Any
LARGE_STATE_BYTES = 2**20
"""Inner states of at least this many bytes (all particles) are reset under a per-step branch (`resetter`)."""


# ----------------------------------------------------------------------------- clocks


class Clock(NamedTuple):
    """Each group's place in its episode under a drawn horizon schedule (leaves (G,))."""

    t: jax.Array  # steps taken in the current episode
    length: jax.Array  # the current episode's length
    group: jax.Array  # the group's index: its stream of length draws


class FixedClock(NamedTuple):
    """Episodes of ``horizon`` steps (None: never-ending); counters are int arrays."""

    horizon: int | None

    @property
    def ends(self) -> bool:
        """Whether episodes end at all (a finite horizon)."""
        return self.horizon is not None

    def first_end(self, t: jax.Array, trunc_len: int) -> jax.Array:
        """The step index (within the truncation) of each group's first episode end."""
        if self.horizon is None:
            return jnp.full(jnp.shape(t), trunc_len, t.dtype)  # never
        return self.horizon - 1 - t

    def after(self, t: jax.Array, trunc_len: int, reset_key: jax.Array) -> jax.Array:
        """The counters after ``trunc_len`` steps."""
        del reset_key
        return t + trunc_len if self.horizon is None else (t + trunc_len) % self.horizon

    def tick(self, t: jax.Array, reset_key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One step: (counters, ended)."""
        del reset_key
        t = t + 1
        end = t >= self.horizon
        return jnp.where(end, jnp.zeros_like(t), t), end

    def last_end(self, t: jax.Array) -> jax.Array:
        """The episode ended at the truncation's last step, from the counters after it."""
        return jnp.zeros(jnp.shape(t), bool) if self.horizon is None else t == 0

    def settle(self, after: jax.Array, scanned: jax.Array) -> jax.Array:
        """The counters after a stepped truncation: ``after`` (the same as the stepped ``scanned``)."""
        del scanned
        return after

    def steps(self, t: jax.Array) -> jax.Array:
        """Steps taken in each group's current episode: the counters themselves."""
        return t

    def random_phase(self, t: jax.Array, offset_key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Each group at a uniformly random step of its episode: (counters, offsets)."""
        offsets = jax.random.randint(offset_key, jnp.shape(t), 0, self.horizon, jnp.int32)
        return offsets, offsets


class DrawnClock(NamedTuple):
    """Episodes whose lengths a random `pes.horizons` schedule draws per group; `Clock` counters."""

    schedule: Any

    @property
    def ends(self) -> bool:
        """Always: every drawn episode has a finite length."""
        return True

    def draw(self, key: jax.Array, group: jax.Array) -> jax.Array:
        """Each group's length from the shared ``key`` (see `pes.horizons`); any shape."""
        lengths = jax.vmap(lambda g: self.schedule.sample(jax.random.fold_in(key, g)))(jnp.ravel(group))
        return lengths.reshape(jnp.shape(group))

    def start(self, key: jax.Array, groups: int) -> Clock:
        """The clocks of ``groups`` groups at step 0 of a first episode, lengths drawn from ``key``."""
        group = jnp.arange(groups, dtype=jnp.int32)
        return Clock(jnp.zeros((groups,), jnp.int32), self.draw(key, group), group)

    def first_end(self, t: Clock, trunc_len: int) -> jax.Array:
        """The step index (within the truncation) of each group's first episode end."""
        del trunc_len
        return t.length - 1 - t.t

    def after(self, t: Clock, trunc_len: int, reset_key: jax.Array) -> Clock:
        """The clocks after ``trunc_len`` steps with no episode end before the last one."""
        return self._advance(t, t.t + trunc_len, reset_key)[0]

    def tick(self, t: Clock, reset_key: jax.Array) -> tuple[Clock, jax.Array]:
        """One step: (clocks, ended); an ended episode's next length is drawn from ``reset_key``."""
        return self._advance(t, t.t + 1, reset_key)

    def _advance(self, t, steps, reset_key):
        end = steps >= t.length
        length = jnp.where(end, self.draw(reset_key, t.group), t.length)
        return Clock(jnp.where(end, jnp.zeros_like(steps), steps), length, t.group), end

    def last_end(self, t: Clock) -> jax.Array:
        """The episode ended at the truncation's last step, from the clocks after it."""
        return t.t == 0

    def settle(self, after: Clock, scanned: Clock) -> Clock:
        """The clocks after a stepped truncation: ``scanned`` (``after`` assumes no earlier episode end)."""
        del after
        return scanned

    def steps(self, t: Clock) -> jax.Array:
        """Steps taken in each group's current episode."""
        return t.t

    def random_phase(self, t: Clock, offset_key: jax.Array) -> tuple[Clock, jax.Array]:
        """Each group at a uniformly random step of its current episode: (clocks, offsets)."""
        offsets = jax.random.randint(offset_key, jnp.shape(t.t), 0, t.length, jnp.int32)
        return t._replace(t=offsets), offsets


# ----------------------------------------------------------------------------- one truncation


class Truncation(NamedTuple):
    """The static part of one truncation's unroll."""

    system: systems.UnrolledSystem
    lay: _common.ParticleLayout
    trunc_len: int
    clock: FixedClock | DrawnClock
    skip_idle_resets: bool = True  # branch on whether any episode ends (one device)
    keep_state: bool = True  # return the particles' states (truncated ES does not)


class Unrolled(NamedTuple):
    """What one truncation of every particle leaves behind (G groups of M members).

    Attributes:
      inner: the particles' inner states after the truncation, leaves (G, M, ...), or None
        when the caller does not keep them.
      t: the groups' clocks after the truncation ((G,) counters, or a `Clock`).
      total: (G, M) the unroll objective, sum_j w_j loss_j over the K steps.
      before: (G, M) the part of ``total`` from the steps up to and including the first
        episode end of the truncation (all of ``total`` if no episode ends in it).
      any_end: (G,) an episode ended at some step of the truncation.
      last_end: (G,) an episode ended at the truncation's last step.
    """

    inner: Any
    t: Any
    total: jax.Array
    before: jax.Array
    any_end: jax.Array
    last_end: jax.Array


class Outcome(NamedTuple):
    """One truncation per group, as the estimators' updates read it (leaves (G,)).

    ``total`` and ``before`` are each group's antithetic differences sum_m sign_m x[g, m] of
    the unroll objective and of its part up to the first episode end (for single particles,
    the particle's own values); ``any_end`` and ``last_end`` as in `Unrolled`.
    """

    total: jax.Array
    before: jax.Array
    any_end: jax.Array
    last_end: jax.Array


def differences(x: jax.Array, lay: _common.ParticleLayout) -> jax.Array:
    """sum_m sign_m * x[g, m]: the antithetic difference of each group, shape (G,)."""
    return x[:, 0] - x[:, 1] if lay.group_size == 2 else x[:, 0]


def outcome(out: Unrolled, lay: _common.ParticleLayout) -> Outcome:
    """The groups' `Outcome` of a truncation: antithetic differences of ``total`` and ``before``."""
    return Outcome(differences(out.total, lay), differences(out.before, lay), out.any_end, out.last_end)


def particle_step(system: systems.UnrolledSystem) -> Callable:
    """One step of every particle (flat particle axis), all with the same data key."""
    return jax.vmap(system.step, in_axes=(0, 0, None))


def reset_where(
    system: systems.UnrolledSystem, state: PyTree, end: jax.Array, reset_key: jax.Array
) -> PyTree:
    """A fresh ``system.init(reset_key)`` for the particles where ``end``, else ``state``."""
    fresh = system.init(reset_key)

    def pick(f, x):
        cond = jnp.reshape(end, (-1,) + (1,) * (x.ndim - 1)) if jnp.ndim(end) else end
        return jnp.where(cond, jnp.expand_dims(f, 0), x)

    return jax.tree.map(pick, fresh, state)


def resetter(system: systems.UnrolledSystem, large: bool) -> Callable:
    """`reset_where`, for a large state only at steps where some episode ends (``lax.cond``).

    Selecting fresh states is a full pass over the states; for a large state a branch on
    whether any episode ends is cheaper (sharded, that condition costs an all-reduce of one
    boolean, which only a large state repays).
    """
    if not large:
        return lambda state, end, key: reset_where(system, state, end, key)

    def reset(state, end, key):
        some = _common.any_over_runs(jnp.any(end))
        return jax.lax.cond(some, lambda s: reset_where(system, s, end, key), lambda s: s, state)

    return reset


def step_or_reset(
    spec: Truncation,
    step: tuple[Callable, Callable],
    thetas: PyTree,
    state: PyTree,
    t: jax.Array | Clock,
    key_pair: jax.Array,
) -> tuple[PyTree, jax.Array | Clock, jax.Array, jax.Array]:
    """Step every particle with the step key, then reset those whose episode ended.

    ``step``: the pair (`particle_step`, `resetter`'s function).  Returns (state, clocks,
    ended, loss), flat over the particles.
    """
    step_fn, reset = step
    state, loss = step_fn(thetas, state, key_pair[0])
    t, end = spec.clock.tick(t, key_pair[1])
    return reset(state, end, key_pair[1]), t, end, loss


class _Steps(NamedTuple):
    """What the two scans of `unroll` share (flat particle axis of N = G M)."""

    spec: Truncation
    step: tuple  # (particle step, reset)
    thetas: PyTree
    thetas_after: PyTree | None
    keys: jax.Array
    weights: jax.Array
    zeros: jax.Array


def _bare_steps(s: _Steps, state, end_last):
    """K steps with no episode end before the last: a scan of bare steps, then one reset."""
    step_fn, reset = s.step

    def body(carry, xs):
        state, total = carry
        key_pair, w = xs
        state, loss = step_fn(s.thetas, state, key_pair[0])
        return (state, total + w * loss), None

    (state, total), _ = jax.lax.scan(body, (state, s.zeros), (s.keys, s.weights))
    if s.spec.clock.ends and s.spec.keep_state:
        state = reset(state, end_last, s.keys[-1, 1])
    return (state if s.spec.keep_state else None), total, total


def _resetting_steps(s: _Steps, state, t):
    """K steps that may end episodes anywhere: `step_or_reset` at every step."""

    def body(carry, xs):
        state, tt, total, before, restarted = carry
        key_pair, w = xs
        th = s.thetas
        if s.thetas_after is not None:  # noise-reuse ES: new episodes run with new noise
            th = jax.tree.map(
                lambda a, b: jnp.where(jnp.reshape(restarted, (-1,) + (1,) * (a.ndim - 1)), a, b),
                s.thetas_after,
                s.thetas,
            )
        state, tt, end, loss = step_or_reset(s.spec, s.step, th, state, tt, key_pair)
        total = total + w * loss
        before = jnp.where(restarted, before, before + w * loss)
        return (state, tt, total, before, restarted | end), None

    num = s.zeros.shape[0]
    init = (state, t, s.zeros, s.zeros, jnp.zeros((num,), bool))
    (state, t, total, before, _), _ = jax.lax.scan(body, init, (s.keys, s.weights))
    keep = s.spec.keep_state
    return (state if keep else None), jnp.broadcast_to(total, (num,)), jnp.broadcast_to(before, (num,)), t


def unroll(
    spec: Truncation,
    thetas: PyTree,
    inner: PyTree,
    t: jax.Array | Clock,
    data_key: jax.Array,
    thetas_after: PyTree | None = None,
) -> Unrolled:
    """Unroll every particle K steps.  ``thetas`` and ``inner`` have leading axes (G, M).

    ``t``: the groups' clocks ((G,) counters or a `Clock`).  Per particle this is exactly
    `systems.unroll` (same keys, same resets), written as a scan over steps of one step
    vmapped over a flat (G * M) particle axis that carries running sums of the weighted
    losses (memory does not grow with K).  A truncation in which no episode ends before its
    last step (the usual case: K divides T and particles run in lockstep) is a scan of bare
    steps and one reset; otherwise `step_or_reset` runs at every step.  With
    ``spec.skip_idle_resets`` (one device) one ``lax.cond`` per truncation picks between
    the two; sharded, the condition would cost an all-reduce, so small states always take
    the resetting scan.  ``thetas_after`` (optional): the parameters of a particle after
    its first episode end inside this truncation (noise-reuse ES), ``thetas`` by default.
    """
    groups, members = jax.tree.leaves(thetas)[0].shape[:2]
    num = groups * members
    flat = lambda tree: jax.tree.map(lambda x: x.reshape((num,) + x.shape[2:]), tree)
    thetas = flat(thetas)
    thetas_after = None if thetas_after is None else flat(thetas_after)
    inner = flat(inner)
    step_fn = particle_step(spec.system)
    keys = systems.step_keys(data_key, spec.trunc_len)
    loss_dtype = jax.eval_shape(step_fn, thetas, inner, keys[0, 0])[1].dtype
    weights = systems.step_weights(spec.system, spec.trunc_len, loss_dtype)
    zeros = jnp.zeros((num,), loss_dtype)
    large = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(inner)) >= LARGE_STATE_BYTES
    steps = _Steps(spec, (step_fn, resetter(spec.system, large)), thetas, thetas_after, keys, weights, zeros)
    out = _dispatch(steps, inner, t, large, members)
    return Unrolled(*_grouped(out, groups, members))


def _dispatch(s: _Steps, inner, t, large, members):
    """The bare or the resetting scan (or a ``lax.cond`` between them); per-group summaries."""
    spec, clock, trunc_len = s.spec, s.spec.clock, s.spec.trunc_len
    new_t = clock.after(t, trunc_len, s.keys[-1, 1])
    first_end = clock.first_end(t, trunc_len)
    any_end = first_end < trunc_len
    repeat = lambda tree: jax.tree.map(lambda x: jnp.repeat(x, members), tree)
    end_last = repeat(clock.last_end(new_t))

    def bare(state):
        return (*_bare_steps(s, state, end_last), new_t)

    def resetting(state):
        state, total, before, tt = _resetting_steps(s, state, repeat(t))
        return state, total, before, clock.settle(new_t, _first_member(tt, members))

    if not clock.ends or trunc_len == 1:
        out = bare(inner)
    elif spec.skip_idle_resets or large:
        mid_end = _common.any_over_runs(jnp.any(first_end < trunc_len - 1))
        out = jax.lax.cond(mid_end, resetting, bare, inner)
    else:
        out = resetting(inner)
    return (*out, any_end, clock.last_end(out[3]))


def _first_member(tree, members):
    return jax.tree.map(lambda x: x.reshape((-1, members))[:, 0], tree)


def _grouped(out, groups, members):
    inner, total, before, t, any_end, last_end = out
    unflat = lambda x: x.reshape((groups, members) + x.shape[1:])
    inner = None if inner is None else jax.tree.map(unflat, inner)
    return inner, t, unflat(total), unflat(before), any_end, last_end


def clocked_unroll(
    spec: Truncation, theta: PyTree, state: PyTree, t: jax.Array | Clock, data_key: jax.Array
) -> tuple[PyTree, jax.Array | Clock]:
    """`systems.unroll` of one unperturbed trajectory whose episodes end by ``spec.clock``.

    ``t``: the trajectory's clock (scalar leaves).  Returns (state, clock) after K steps.
    """
    keys = systems.step_keys(data_key, spec.trunc_len)

    def body(carry, key_pair):
        state, t = carry
        new_state, _ = spec.system.step(theta, state, key_pair[0])
        t, end = spec.clock.tick(t, key_pair[1])
        return (systems.tree_where(end, spec.system.init(key_pair[1]), new_state), t), None

    (state, t), _ = jax.lax.scan(body, (state, t), keys)
    return state, t


# ----------------------------------------------------------------------------- perturbed groups


class Groups(NamedTuple):
    """Per-group inputs of one truncation (leading axis G); `chunked` splits them.

    Attributes:
      eps: the groups' perturbations (theta's tree).
      inner: the particles' states, leaves (G, M, ...), or None when every particle starts
        from the one state passed as ``shared`` (truncated ES).
      t: the groups' clocks.
      eps_after: the perturbations after a group's first episode end in the truncation
        (noise-reuse ES), or None for ``eps`` throughout.
    """

    eps: PyTree
    inner: PyTree
    t: Any
    eps_after: PyTree = None


def perturbed_unroll(
    spec: Truncation, theta: PyTree, groups: Groups, shared: PyTree | None, data_key: jax.Array
) -> Unrolled:
    """theta + sign * eps for every member (G groups), then `unroll` from their states.

    ``shared``: one state every particle starts from (then ``groups.inner`` is None).
    """
    thetas = _common.perturb(theta, groups.eps, spec.lay)
    after = None if groups.eps_after is None else _common.perturb(theta, groups.eps_after, spec.lay)
    num_groups = jax.tree.leaves(groups.eps)[0].shape[0]
    inner = (
        groups.inner if shared is None else _common.broadcast_state(shared, (num_groups, spec.lay.group_size))
    )
    return unroll(spec, thetas, inner, groups.t, data_key, after)


def chunked(run: Callable, num_chunks: int, shard: ParticleSharding) -> Callable:
    """``run(theta, groups, shared, data_key)`` over ``G / num_chunks`` groups at a time.

    A ``lax.map`` inside the compiled estimate; chunk c holds groups c, c + C, c + 2C, ...
    (so a chunk spans every device when the group axis is sharded).  Each particle's unroll
    is the same computation either way, so results do not depend on the chunking; only the
    perturbed thetas and the unroll's working memory shrink to one chunk.  With one chunk
    this is ``run`` with its outputs' group axis constrained to the devices.
    """
    if num_chunks == 1:
        return lambda theta, groups, shared, data_key: shard.groups(run(theta, groups, shared, data_key))

    def split(x):  # (G, ...) -> (C, G / C, ...), chunk c = groups c, c + C, ...
        return jnp.swapaxes(x.reshape((x.shape[0] // num_chunks, num_chunks) + x.shape[1:]), 0, 1)

    def merge(x):
        return jnp.swapaxes(x, 0, 1).reshape((x.shape[0] * x.shape[1],) + x.shape[2:])

    def chunked_run(theta, groups, shared, data_key):
        xs = shard.groups(jax.tree.map(split, groups), axis=1)
        out = jax.lax.map(lambda xs: shard.groups(run(theta, shard.groups(xs), shared, data_key)), xs)
        return shard.groups(jax.tree.map(merge, shard.groups(out, axis=1)))

    return chunked_run


# ----------------------------------------------------------------------------- staggered starts


def burn_in(
    step: Callable[[PyTree, jax.Array], tuple[PyTree, jax.Array]],
    inner: PyTree,
    offsets: jax.Array,
    burn_key: jax.Array,
    num_steps: int,
) -> PyTree:
    """Advance group g by ``offsets[g]`` steps of ``step(inner, key) -> (inner, loss)``.

    A scan of ``num_steps`` steps, each kept only by the groups still before their offset;
    step j uses ``step_keys(burn_key, num_steps)[j, 0]``.
    """
    keys = systems.step_keys(burn_key, num_steps)

    def body(inner, xs):
        j, key_pair = xs
        new_inner, _ = step(inner, key_pair[0])
        return _common.group_where(j < offsets, new_inner, inner), None

    inner, _ = jax.lax.scan(body, inner, (jnp.arange(num_steps), keys))
    return inner


def staggered(s: Setup, init: Callable, perturbation: Callable, seed: Callable | None = None) -> Callable:
    """``init`` with every group moved to a uniformly random step of its first episode.

    The burn-in runs each pair under theta + sign * eps_g, eps = ``perturbation(noise_key,
    theta, state)`` (the episode's own perturbation, so that the estimators stay unbiased),
    with the keys of ``split(key, 4)`` = (state, offset, noise, burn-in); ``seed(state,
    eps)`` then records that perturbation in the family's state.
    """
    if s.burn_steps < 1:
        return init

    def wrapped(key, theta):
        state = init(key, theta)
        _, offset_key, noise_key, burn_key = jax.random.split(key, 4)
        eps = perturbation(noise_key, theta, state)
        t, offsets = s.clock.random_phase(state.t, offset_key)
        thetas = _common.perturb(theta, eps, s.lay)
        step = jax.vmap(jax.vmap(s.system.step, in_axes=(0, 0, None)), in_axes=(0, 0, None))
        inner = burn_in(lambda x, k: step(thetas, x, k), state.inner, offsets, burn_key, s.burn_steps)
        state = state._replace(inner=inner, t=t)
        return state if seed is None else seed(state, eps)

    return wrapped


# ----------------------------------------------------------------------------- set-up


class Options(NamedTuple):
    """The hyperparameters every ES-family estimator shares (see `pes.estimators.pes`)."""

    trunc_len: int
    sigma: float
    num_particles: int
    antithetic: bool = True
    stagger: bool | None = None  # None: not an option of this estimator
    particle_chunk_size: int | None = None
    devices: int | str | None = None
    divide_by_variance: bool = False
    horizon_schedule: Any = None

    @classmethod
    def of(cls, hparams: dict) -> Options:
        """The options among a factory's arguments (``locals()`` at its start)."""
        return cls(**{k: v for k, v in hparams.items() if k in cls._fields})


class Setup(NamedTuple):
    """A validated ES-family estimator's static plan (built once by its factory)."""

    name: str
    system: systems.UnrolledSystem  # with the schedule's horizon, when it has a fixed one
    opts: Options
    lay: _common.ParticleLayout
    scale: float  # 1 / (N sigma^2)
    shard: ParticleSharding
    num_chunks: int
    clock: FixedClock | DrawnClock

    @property
    def horizon(self) -> int | None:
        """The fixed horizon, or the longest drawn episode."""
        return self.clock.schedule.longest if isinstance(self.clock, DrawnClock) else self.system.horizon

    @property
    def burn_steps(self) -> int:
        """Steps of a staggered start's burn-in (0: nothing to stagger)."""
        return (self.horizon - 1) if self.opts.stagger and self.horizon is not None else 0

    def start_clock(self, key: jax.Array, groups: int) -> jax.Array | Clock:
        """The clocks of ``groups`` groups at the start of their first episode."""
        if isinstance(self.clock, DrawnClock):
            return self.clock.start(jax.random.fold_in(key, 1), groups)
        return jnp.zeros((groups,), jnp.int32)

    def truncation(self, keep_state: bool = True) -> Truncation:
        """The static `Truncation` of this estimator (skipping idle resets only without sharding)."""
        skip = self.shard.mesh is None
        return Truncation(self.system, self.lay, self.opts.trunc_len, self.clock, skip, keep_state)

    def engine(self, keep_state: bool = True) -> Callable:
        """``run(theta, groups, shared, data_key) -> Unrolled``: chunked, sharded, perturbed unroll."""
        spec = self.truncation(keep_state)
        run = lambda theta, groups, shared, data_key: perturbed_unroll(spec, theta, groups, shared, data_key)
        return chunked(run, self.num_chunks, self.shard)


def _plan(name, lay, particle_chunk_size, devices):
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
        not _common._is_int(particle_chunk_size)
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


def _with_schedule(name, system, schedule):
    """(the system with the schedule's fixed horizon, the clock) after validating the schedule."""
    horizons.check(name, schedule)
    if schedule is None:
        return system, FixedClock(system.horizon)
    if isinstance(schedule, horizons.LogUniform):
        if system.unroll_loss == "last":
            raise ValueError(
                f"estimator '{name}': horizon_schedule={schedule!r} is invalid for a system with "
                "unroll_loss='last'; allowed: null or Constant (a 'last' objective needs "
                "truncations that tile the episode)"
            )
        return system, DrawnClock(schedule)
    system = system._replace(horizon=schedule.fixed_horizon)
    return system, FixedClock(system.horizon)


def setup(name: str, system: systems.UnrolledSystem, opts: Options) -> Setup:
    """Validate ``opts`` for estimator ``name`` on ``system`` (one-line ``ValueError``s) and plan it."""
    system, clock = _with_schedule(name, system, opts.horizon_schedule)
    _common.check_trunc_len(name, system, opts.trunc_len)
    _common.check_sigma(name, opts.sigma)
    _common.check_particles(name, opts.num_particles, opts.antithetic)
    _common.check_bool(name, "divide_by_variance", opts.divide_by_variance)
    if opts.stagger is not None:
        longest = clock.schedule.longest if isinstance(clock, DrawnClock) else system.horizon
        _common.check_stagger(name, system._replace(horizon=longest), opts.stagger)
    lay = _common.layout(opts.num_particles, opts.antithetic)
    num_chunks, shard = _plan(name, lay, opts.particle_chunk_size, opts.devices)
    scale = 1.0 / (opts.num_particles * opts.sigma**2)
    return Setup(name, system, opts, lay, scale, shard, num_chunks, clock)


def hparams(s: Setup, recorded: dict) -> dict:
    """``recorded`` (the estimator's own hyperparameters), then the options that are set."""
    if s.opts.horizon_schedule is not None:
        recorded["horizon_schedule"] = s.opts.horizon_schedule
    return _common.scale_hparams(recorded, s.opts.particle_chunk_size, s.opts.devices)
