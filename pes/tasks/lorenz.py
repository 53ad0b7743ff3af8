"""Learning two parameters of the Lorenz system from its trajectory (NRES paper, Li et al. 2023).

The Lorenz equations dx = a (y - x), dy = x (r - z) - y, dz = x y - b z are integrated by
explicit Euler with step ``dt``.  A model trajectory with the learned parameters
(a, r) = (exp theta["log_a"], exp theta["log_r"]) and the known b runs next to a reference
trajectory with the true parameters (a*, r*, b) = (10, 28, 8/3); both start from the same
point.  Step t's loss is the squared difference of the two z coordinates after the update,
divided by T, so the "sum" objective of one episode is the mean squared z error over the
T steps.  The dynamics are chaotic at these parameters: the exact gradient of a long
episode explodes, which is what the evolution-strategies estimators are for.

State: a float vector (x, y, z, x*, y*, z*).  The start point is ``init_point`` (the NRES
paper's training task: one fixed start) plus, with ``init_noise`` > 0, a Gaussian
perturbation of that standard deviation drawn from the reset key (the same for model and
reference).  The default settings are those of the NRES paper's Lorenz script (T = 2000,
dt = 0.005, theta_0 = (log a, log r) = (3.116, 3.7), i.e. a = 22.6, r = 40.4).

``evaluate(theta, key)`` returns
* ``train_loss``: the meta-objective from the training start point, unperturbed theta;
* ``test_loss``: the same mean over ``eval_inits`` start points perturbed by N(0, 1)
  (fixed seed ``eval_seed``; the NRES paper's test task perturbs every start this way);
* ``a``, ``r``: the learned parameters.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from pes.systems import UnrolledSystem
from pes.tasks import Task, check_ints, check_param

TRUE_A, TRUE_R, TRUE_B = 10.0, 28.0, 8.0 / 3.0


def _check(name, value, ok, allowed):
    check_param("lorenz", name, value, ok, allowed)


def _real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The arguments of `make` (documented there), validated when built; ``init_point`` is a tuple."""

    horizon: int
    dt: float
    init_log_a: float
    init_log_r: float
    init_point: tuple[float, float, float]
    init_noise: float
    eval_inits: int
    eval_seed: int

    def __post_init__(self):
        check_ints("lorenz", 1, horizon=self.horizon, eval_inits=self.eval_inits)
        check_ints("lorenz", 0, eval_seed=self.eval_seed)
        _check("dt", self.dt, _real(self.dt) and self.dt > 0, "a finite number > 0")
        _check("init_log_a", self.init_log_a, _real(self.init_log_a), "a finite number")
        _check("init_log_r", self.init_log_r, _real(self.init_log_r), "a finite number")
        noise = self.init_noise
        _check("init_noise", noise, _real(noise) and noise >= 0, "a finite number >= 0")
        point = tuple(self.init_point)
        _check("init_point", list(point), len(point) == 3 and all(_real(v) for v in point), "three numbers")
        object.__setattr__(self, "init_point", point)


class Lorenz(NamedTuple):
    """The model and reference trajectories, Euler-integrated (pure, jit-compatible)."""

    s: Settings

    def start(self, key: jax.Array | None, noise: float) -> jax.Array:
        """The state (model and reference at the same point): ``init_point`` + noise * N(0, I)."""
        dtype = jnp.result_type(float)
        xyz = jnp.asarray(self.s.init_point, dtype)
        if noise:
            xyz = xyz + noise * jax.random.normal(key, (3,), dtype)
        return jnp.concatenate([xyz, xyz])

    def euler(self, xyz: jax.Array, a: jax.Array, r: jax.Array, b: jax.Array) -> jax.Array:
        """One explicit Euler step of the Lorenz equations."""
        x, y, z = xyz[0], xyz[1], xyz[2]
        dt = self.s.dt
        return jnp.stack([x + a * (y - x) * dt, y + (x * (r - z) - y) * dt, z + (x * y - b * z) * dt])

    def init(self, key: jax.Array) -> jax.Array:
        """An episode's start (perturbed by ``init_noise`` from the reset key)."""
        return self.start(key, self.s.init_noise)

    def step(self, theta: dict, state: jax.Array, key: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        """Both trajectories one step on; the loss is the squared z difference / T."""
        del key
        dtype = state.dtype
        a = jnp.exp(jnp.asarray(theta["log_a"], dtype))
        r = jnp.exp(jnp.asarray(theta["log_r"], dtype))
        model = self.euler(state[:3], a, r, jnp.asarray(TRUE_B, dtype))
        ref = self.euler(state[3:], *(jnp.asarray(v, dtype) for v in (TRUE_A, TRUE_R, TRUE_B)))
        return jnp.concatenate([model, ref]), (model[2] - ref[2]) ** 2 / self.s.horizon

    def episode_loss(self, theta: dict, state: jax.Array) -> jax.Array:
        """The sum of the step losses of one episode from ``state``."""

        def body(s, _):
            s, loss = self.step(theta, s, None)
            return s, loss

        _, losses = jax.lax.scan(body, state, None, length=self.s.horizon)
        return jnp.sum(losses)


def evaluation(lorenz: Lorenz, eval_keys: jax.Array) -> Callable:
    """``evaluate(theta, key)``: training- and test-start losses, and the learned a and r."""

    def evaluate(theta, key):
        del key  # fixed start points: the same evaluation for every method and log point
        train = lorenz.episode_loss(theta, lorenz.start(None, 0.0))
        tests = jax.vmap(lambda k: lorenz.episode_loss(theta, lorenz.start(k, 1.0)))(eval_keys)
        return {
            "train_loss": train,
            "test_loss": jnp.mean(tests),
            "a": jnp.exp(theta["log_a"]),
            "r": jnp.exp(theta["log_r"]),
        }

    return evaluate


def build(s: Settings) -> Task:
    """The task of validated settings ``s``."""
    lorenz = Lorenz(s)
    system = UnrolledSystem(init=lorenz.init, step=lorenz.step, horizon=s.horizon, unroll_loss="sum")
    eval_keys = jax.random.split(jax.random.key(s.eval_seed), s.eval_inits)
    dtype = jnp.result_type(float)
    theta0 = {"log_a": jnp.asarray(s.init_log_a, dtype), "log_r": jnp.asarray(s.init_log_r, dtype)}
    metadata = {"true_a": TRUE_A, "true_r": TRUE_R, "b": TRUE_B, "horizon": s.horizon, "dt": s.dt}
    return Task(
        "lorenz",
        system,
        theta0,
        evaluation(lorenz, eval_keys),
        metadata,
        differentiable=True,
        objective="train_loss",
        optimum={"log_a": math.log(TRUE_A), "log_r": math.log(TRUE_R)},
        eval_keys=eval_keys,
    )


def make(
    horizon: int = 2000,
    dt: float = 0.005,
    init_log_a: float = 3.116,
    init_log_r: float = 3.7,
    init_point: tuple[float, float, float] = (1.2, 1.3, 1.6),
    init_noise: float = 0.0,
    eval_inits: int = 256,
    eval_seed: int = 0,
) -> Task:
    """Build the task (the keyword arguments are the task's config keys; they only fill `Settings`).

    Args:
      horizon: T, Euler steps per episode (2000).
      dt: Euler step (0.005).
      init_log_a, init_log_r: theta_0.
      init_point: the (x, y, z) every episode starts from.
      init_noise: std of a Gaussian perturbation of the start point per episode (0: fixed).
      eval_inits: perturbed start points of ``test_loss``.
      eval_seed: seed of those start points.
    """
    return build(Settings(**locals()))
