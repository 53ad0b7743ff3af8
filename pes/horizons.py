"""Per-episode horizons drawn from a schedule (learned_optimization's truncation schedules).

The evolution-strategies estimators (`pes`, `es`, `nres`, `gpes`) accept
``horizon_schedule=``: instead of the system's fixed horizon, every episode of every noise
group ends after a length drawn from the schedule when the episode starts.

* `Constant(length)`: every episode has ``length`` steps; the estimator is the one for the
  system with ``horizon=length`` (the same numbers).
* `LogUniform(min_length, max_length)`: ``floor(exp(u))`` with ``u ~ U[log min_length, log
  max_length)``, so lengths lie in ``[min_length, max_length - 1]`` and short episodes are
  more frequent than long ones (as in learned_optimization's ``LogUniformLengthSchedule``).
* `NeverEnding()`: episodes never end (the system with ``horizon=None``).

Draws (a random schedule): each noise group (both members of an antithetic pair, which share
every key) draws its own lengths, so groups that are out of step stay out of step.  A group
with index g draws ``sample(fold_in(key, g))``: for its first episode with ``key =
fold_in(init key, 1)``, and for the episode that starts after a reset at step j of a
truncation with ``key`` = that step's reset key (the key that also re-initialises the
state).  The lengths do not depend on theta or on the perturbations, so PES, NRES and GPES-K
stay unbiased for the gradient of the expected objective, E over the lengths of the loss.
With ``stagger=True`` a group enters its first episode (length L drawn as above) at a
uniformly random step in ``[0, L)`` by a burn-in of ``max_length - 2`` masked steps.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Constant(NamedTuple):
    """Every episode ``length`` steps: the fixed horizon ``length``."""

    length: int

    @property
    def fixed_horizon(self) -> int:
        """The horizon of every episode: ``length``."""
        return self.length


class NeverEnding(NamedTuple):
    """Episodes never end: the fixed horizon ``None``."""

    @property
    def fixed_horizon(self) -> None:
        """None: episodes never end."""
        return None


class LogUniform(NamedTuple):
    """Lengths ``floor(exp(u))``, ``u ~ U[log min_length, log max_length)``: in [min, max - 1]."""

    min_length: int
    max_length: int

    @property
    def longest(self) -> int:
        """The longest episode the schedule draws."""
        return self.max_length - 1

    def sample(self, key: jax.Array) -> jax.Array:
        """One length (int32 scalar) from ``key``; float32 draws whatever the x64 setting."""
        lo, hi = math.log(self.min_length), math.log(self.max_length)
        u = jax.random.uniform(key, (), jnp.float32, lo, hi)
        length = jnp.floor(jnp.exp(u)).astype(jnp.int32)
        return jnp.clip(length, self.min_length, self.longest)

    def probabilities(self) -> tuple[np.ndarray, np.ndarray]:
        """(lengths, probabilities): the exact distribution of `sample` (up to float32 rounding)."""
        lengths = np.arange(self.min_length, self.max_length)
        edges = np.log(np.append(lengths, self.max_length).astype(np.float64))
        return lengths, np.diff(edges) / (edges[-1] - edges[0])


Schedule = Constant | NeverEnding | LogUniform
"""A horizon schedule: `Constant`, `NeverEnding` or `LogUniform`."""
KINDS = {"constant": Constant, "log_uniform": LogUniform, "never_ending": NeverEnding}
"""The schedule classes by the ``kind`` of their config form (see `from_config`)."""


def _int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check(name: str, schedule: Schedule | None) -> None:
    """Raise a one-line ``ValueError`` if ``schedule`` is not a valid horizon schedule (or None)."""
    if schedule is None or isinstance(schedule, NeverEnding):
        return
    if isinstance(schedule, Constant) and _int(schedule.length) and schedule.length >= 1:
        return
    if (
        isinstance(schedule, LogUniform)
        and _int(schedule.min_length)
        and _int(schedule.max_length)
        and 1 <= schedule.min_length < schedule.max_length
    ):
        return
    raise ValueError(
        f"estimator '{name}': horizon_schedule={schedule!r} is invalid; allowed: null, "
        "Constant(length >= 1), LogUniform(1 <= min_length < max_length) or NeverEnding()"
    )


def from_config(value: dict[str, Any] | None) -> Schedule | None:
    """A schedule from its config form: null, ``{kind: constant, length: T}``,
    ``{kind: log_uniform, min_length: a, max_length: b}`` or ``{kind: never_ending}``."""
    if value is None:
        return None
    allowed = (
        "null, {kind: constant, length: T}, {kind: log_uniform, min_length: a, max_length: b} "
        "or {kind: never_ending}"
    )
    if not isinstance(value, dict) or value.get("kind") not in KINDS:
        raise ValueError(f"horizon_schedule={value!r} is invalid; allowed: {allowed}")
    params = {k: v for k, v in value.items() if k != "kind"}
    cls = KINDS[value["kind"]]
    if set(params) != set(cls._fields):
        fields = ", ".join(cls._fields) or "no other key"
        raise ValueError(f"horizon_schedule={value!r} is invalid; allowed for kind {value['kind']}: {fields}")
    return cls(**params)
