"""Gradient estimators for unrolled computation graphs.

Every estimator is built by a factory ``factory(system, **hparams)`` and is a
`GradientEstimator` with ``init(key, theta) -> state`` and
``estimate(key, theta, state) -> (grad, state, aux)``.

| name    | unbiased for the whole-episode gradient?                          |
|---------|-------------------------------------------------------------------|
| `pes`   | yes (Persistent ES, Vicol et al. 2021)                             |
| `es`    | only with trunc_len = horizon (full-unroll ES); truncated ES is not |
| `nres`  | yes (noise-reuse ES, Li et al. 2023: one perturbation per episode)   |
| `gpes`  | yes (GPES-K: fresh noise every `noise_every` steps; PES ... NRES)    |
| `tbptt` | only with trunc_len = horizon                                      |
| `rtrl`  | yes (exact, forward mode; small systems)                           |
| `uoro`  | yes (stochastic rank-one RTRL)                                     |
| `ars`   | no (ARS V1-t, Mania et al. 2018: top-b pairs, reward-std scaling)  |
| `openai_es` | no (Salimans et al. 2017: centred-rank fitness shaping)        |
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from pes import systems
from pes.estimators._common import GradientEstimator
from pes.estimators.baselines import ars, openai_es
from pes.estimators.gradient import RTRLState, TBPTTState, UOROState, rtrl, tbptt, uoro
from pes.estimators.noise_reuse import GPESState, NRESState, gpes, nres
from pes.estimators.persistent import PESState, pes
from pes.estimators.pes_analytic import PESAState, pes_a
from pes.estimators.truncated import ESState, es

REGISTRY: dict[str, Callable[..., GradientEstimator]] = {
    "pes": pes,
    "es": es,
    "nres": nres,
    "gpes": gpes,
    "pes_a": pes_a,
    "tbptt": tbptt,
    "rtrl": rtrl,
    "uoro": uoro,
    "ars": ars,
    "openai_es": openai_es,
}
"""Every estimator by name: ``REGISTRY[name](system, **hparams)`` builds it (`make` checks first)."""


def hparam_names(name: str) -> list[str]:
    """The hyperparameters the factory ``name`` accepts."""
    params = inspect.signature(REGISTRY[name]).parameters
    return [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]


def make(name: str, system: systems.UnrolledSystem, **hparams: Any) -> GradientEstimator:
    """Build the estimator ``name`` for ``system``; raise ``ValueError`` on bad input."""
    if name not in REGISTRY:
        raise ValueError(f"estimator={name!r} is unknown; allowed: {', '.join(sorted(REGISTRY))}")
    allowed = hparam_names(name)
    unknown = sorted(set(hparams) - set(allowed))
    if unknown:
        raise ValueError(
            f"estimator '{name}' has no hyperparameter {', '.join(unknown)}; allowed: {', '.join(allowed)}"
        )
    return REGISTRY[name](system, **hparams)


class _Differentiated(Exception):
    """Raised by the probe system's step when an estimator differentiates it."""


@jax.custom_jvp
def _refuse_derivatives(x):
    return x


@_refuse_derivatives.defjvp
def _raise_on_jvp(primals, tangents):
    raise _Differentiated


def _probe_step(theta, state, key):
    state = _refuse_derivatives(0.5 * state + theta)
    return state, jnp.sum(state**2)


_PROBE_HPARAMS = {"trunc_len": 1, "sigma": 0.1, "num_particles": 2, "noise_every": 1}


@functools.cache
def differentiates_step(name: str) -> bool:
    """Whether estimator ``name`` differentiates the inner step (autodiff through
    ``system.step``), so that it needs a differentiable objective.

    Read off the estimator itself, not kept in a list: its ``estimate`` is traced (nothing is
    computed) on a one-dimensional system whose step refuses differentiation.
    """
    if name not in REGISTRY:
        raise ValueError(f"estimator={name!r} is unknown; allowed: {', '.join(sorted(REGISTRY))}")
    system = systems.UnrolledSystem(init=lambda key: jnp.zeros(1), step=_probe_step, horizon=2)
    est = make(name, system, **{k: v for k, v in _PROBE_HPARAMS.items() if k in hparam_names(name)})
    key, theta = jax.random.key(0), jnp.zeros(1)
    try:
        jax.eval_shape(lambda: est.estimate(key, theta, est.init(key, theta)))
    except _Differentiated:
        return True
    return False


def derivative_free() -> list[str]:
    """The estimators that never differentiate the inner step (sorted): the ones allowed on an
    objective that is not differentiable (`differentiates_step`)."""
    return [name for name in sorted(REGISTRY) if not differentiates_step(name)]


__all__ = [
    "REGISTRY",
    "GradientEstimator",
    "make",
    "hparam_names",
    "differentiates_step",
    "derivative_free",
    "pes",
    "es",
    "nres",
    "gpes",
    "pes_a",
    "tbptt",
    "rtrl",
    "uoro",
    "ars",
    "openai_es",
    "PESState",
    "ESState",
    "NRESState",
    "GPESState",
    "PESAState",
    "TBPTTState",
    "RTRLState",
    "UOROState",
]
