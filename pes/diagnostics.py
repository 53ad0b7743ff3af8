"""Is an estimator unbiased on *your* system?  `check_unbiased` answers with a statistical test.

An online estimator (PES, NRES, truncated ES, TBPTT, ...) returns one gradient estimate per
truncation of K inner steps.  Summed over the truncations of an episode (θ held fixed), an
unbiased estimator's estimates average to the gradient of the whole-episode objective
L(θ) = E[sum of the T step losses]; a biased one's (truncated ES, TBPTT with K < T) do not.
`check_unbiased` draws many such episode sums from independent keys and compares their mean
with a reference:

* ``reference="exact"``: ``jax.grad`` of `pes.systems.full_objective` (autodiff through the
  whole horizon; needs a differentiable ``step`` and a horizon small enough to backpropagate);
* ``reference="es"``: full-episode antithetic ES (K = T) with the same σ, which needs no
  derivatives.  ES-type estimators estimate the gradient of a Gaussian-smoothed objective;
  against the exact gradient they differ from it by O(σ²) on a non-quadratic problem, so check
  with a small σ, or against full-episode ES with the σ you use.

The test.  Each sample is d_i = g_i - r_i (an episode sum minus a reference draw with its own,
independent keys; for a deterministic system with ``reference="exact"``, r_i is the same for
every i).  Under "unbiased", E[d_i] = 0.  The mean of d along each tested direction (θ's
coordinates, or, for θ with more than ``max_directions`` entries, the reference gradient's
direction plus random orthonormal ones, all fixed before the samples are drawn) gets a
one-sample Student t statistic; the estimator is called biased when the largest |t| exceeds the
two-sided Bonferroni threshold for ``alpha`` over the directions, so a correct estimator is
called biased with probability at most ``alpha`` (for samples close enough to normal that the
t test holds; the samples are sums over an episode and over particles, which helps).
Differences below ``rtol`` times the reference's norm count as rounding, so that an exact
estimator is not called biased by float round-off.

Everything random is driven by ``key``; the samples are computed in one compiled call (a
``lax.scan`` over an episode's truncations, batched over samples).  Nothing is printed: the
returned `UnbiasednessCheck` has a readable ``str``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from pes import estimators, systems, variance

PyTree = Any
REFERENCES = ("exact", "es")
"""The references `check_unbiased` compares with: autodiff through the horizon, full-episode ES."""
PILOT_SAMPLES = 8  # reference draws that fix the gradient direction for large theta


class UnbiasednessCheck(NamedTuple):
    """The result of `check_unbiased`; ``str(result)`` is a short report.

    Attributes:
      estimator: the estimator's registry name.
      reference: ``"exact"`` (autodiff through the horizon) or ``"es"`` (full-episode ES).
      consistent: True unless the mean differs from the reference beyond the threshold.
      alpha: the false-alarm rate the threshold is set for.
      num_samples: independent episode sums drawn.
      episodes_per_sample: episodes one sample covers (lcm(T, K) / T; 1 when K divides T).
      directions: ``"coordinates"`` (θ's entries) or ``"projections"`` (see the module docstring).
      estimate: (D,) the estimator's mean along each tested direction.
      target: (D,) the reference's mean along each direction.
      stderr: (D,) standard error of ``estimate - target``.
      t: (D,) the t statistics ``(estimate - target) / stderr``.
      threshold: the largest |t| that still counts as consistent.
      relative_bias: ‖mean of the estimator − mean of the reference‖ / ‖mean of the reference‖
        over all of θ (measured, so it includes noise of about ``relative_noise``).
      relative_noise: the size ``relative_bias`` has from noise alone, for an unbiased estimator
        (the root of the summed variances of the mean difference, over ‖reference‖).
    """

    estimator: str
    reference: str
    consistent: bool
    alpha: float
    num_samples: int
    episodes_per_sample: int
    directions: str
    estimate: np.ndarray
    target: np.ndarray
    stderr: np.ndarray
    t: np.ndarray
    threshold: float
    relative_bias: float
    relative_noise: float

    @property
    def max_abs_t(self) -> float:
        """The largest |t| over the tested directions."""
        return float(np.max(np.abs(self.t)))

    def __str__(self) -> str:
        ref = "the exact gradient" if self.reference == "exact" else "full-episode ES"
        if self.consistent:
            head = f"{self.estimator}: consistent with {ref}"
        else:
            head = f"{self.estimator}: biased by {100 * self.relative_bias:.3g} % of the gradient's norm"
            head += f" against {ref}"
        lines = [
            head,
            f"  max |t| = {self.max_abs_t:.2f} over {len(self.t)} {self.directions} "
            f"(threshold {self.threshold:.2f} for a {100 * self.alpha:g} % false-alarm rate); "
            f"{self.num_samples} samples of {self.episodes_per_sample} episode(s); "
            f"noise level {100 * self.relative_noise:.3g} % of the gradient's norm",
        ]
        shown = min(len(self.t), 8)
        label = "theta" if self.directions == "coordinates" else "direction"
        for i in np.argsort(-np.abs(self.t))[:shown]:
            lines.append(
                f"  {label}[{i}]: estimate {self.estimate[i]:.4g}, reference {self.target[i]:.4g} "
                f"± {self.stderr[i]:.2g} (t = {self.t[i]:.2f})"
            )
        if shown < len(self.t):
            lines.append(f"  ... {len(self.t) - shown} more directions")
        return "\n".join(lines)


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}={value!r} is invalid; allowed: an integer >= {low}")


def _check_inputs(system, reference, alpha, num_samples, max_directions, rtol) -> None:
    systems.check_system(system)
    if system.horizon is None:
        raise ValueError(
            "check_unbiased needs a finite horizon T (the whole-episode gradient); "
            "this system has horizon=None"
        )
    if reference not in REFERENCES:
        raise ValueError(f"reference={reference!r} is invalid; allowed: {', '.join(REFERENCES)}")
    if isinstance(alpha, bool) or not isinstance(alpha, float | int) or not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r} is invalid; allowed: a number in (0, 1)")
    _check_int("num_samples", num_samples, 8)
    _check_int("max_directions", max_directions, 1)
    if isinstance(rtol, bool) or not isinstance(rtol, float | int) or not 0 <= rtol < 1:
        raise ValueError(f"rtol={rtol!r} is invalid; allowed: a number in [0, 1)")


def episode_estimate(
    estimator: estimators.GradientEstimator, system: systems.UnrolledSystem, theta: PyTree
) -> tuple[Callable[[jax.Array], PyTree], int]:
    """``(sample, episodes)``: ``sample(key)`` sums the estimates over whole episodes, θ fixed.

    From ``estimator.init``, it takes lcm(T, K) / K consecutive estimates (K the estimator's
    ``steps_per_estimate``), which cover every phase of the episode exactly ``episodes`` =
    lcm(T, K) / T times (also for step-unlocked particles), and returns their sum divided by
    ``episodes``: for an unbiased estimator, a draw whose mean is the whole-episode gradient.
    """
    horizon, trunc_len = system.horizon, estimator.steps_per_estimate
    span = math.lcm(horizon, trunc_len)
    num_estimates, episodes = span // trunc_len, span // horizon

    def sample(key: jax.Array) -> PyTree:
        init_key, run_key = jax.random.split(key)
        state = estimator.init(init_key, theta)
        total = jax.tree.map(jnp.zeros_like, theta)

        def body(carry, k):
            state, total = carry
            grad, state, _ = estimator.estimate(k, theta, state)
            return (state, jax.tree.map(jnp.add, total, grad)), None

        (_, total), _ = jax.lax.scan(body, (state, total), jax.random.split(run_key, num_estimates))
        return jax.tree.map(lambda x: x / episodes, total)

    return sample, episodes


def reference_sample(
    system: systems.UnrolledSystem,
    theta: PyTree,
    *,
    reference: str,
    trunc_len: int,
    es_sigma: float | None = None,
    es_particles: int | None = None,
) -> Callable[[jax.Array], PyTree]:
    """``sample(key)``: one draw of the reference gradient of the whole-episode objective.

    ``"exact"``: ``jax.grad`` of `pes.systems.full_objective` from a fresh ``init`` with the
    key's data (for ``unroll_loss="last"`` the objective of truncations of ``trunc_len``);
    ``"es"``: one full-episode antithetic ES estimate with ``es_sigma`` and ``es_particles``.
    """
    if reference == "exact":
        last = system.unroll_loss == "last"

        def exact(key):
            init_key, data_key = jax.random.split(key)
            return jax.grad(
                lambda th: systems.full_objective(
                    system, th, init_key, data_key, trunc_len=trunc_len if last else None
                )
            )(theta)

        return exact
    if es_sigma is None or es_particles is None:
        raise ValueError(
            "reference='es' needs es_sigma and es_particles (they default to the estimator's "
            "sigma and num_particles; pass them for an estimator without those)"
        )
    full_es = estimators.make(
        "es", system, trunc_len=system.horizon, sigma=es_sigma, num_particles=es_particles
    )
    sample, _ = episode_estimate(full_es, system, theta)
    return sample


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t distribution with ``df`` degrees of freedom."""
    from scipy.special import stdtrit  # scipy is a dependency of jax

    return float(stdtrit(df, p))


def zero_mean_test(
    samples: np.ndarray, *, alpha: float, atol: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """One-sample t tests of "mean 0" for every column of ``samples`` (n, D), Bonferroni over D.

    Returns ``(mean, stderr, t, threshold)``: the rejection rule ``max |t| > threshold`` has a
    false-alarm rate of at most ``alpha`` for normal samples.  ``atol`` is added in quadrature to
    every standard error (differences of that size count as rounding, not bias).
    """
    samples = np.asarray(samples, np.float64)
    n, d = samples.shape
    mean = samples.mean(axis=0)
    stderr = np.sqrt(samples.var(axis=0, ddof=1) / n + atol**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(stderr > 0, mean / stderr, np.where(mean == 0, 0.0, np.inf))
    threshold = t_quantile(1.0 - alpha / (2 * d), n - 1)
    return mean, stderr, t, threshold


def _directions(num_params: int, max_directions: int, pilot: np.ndarray, key: jax.Array) -> np.ndarray:
    """(D, P) orthonormal rows: coordinates, or the pilot direction plus random ones."""
    if num_params <= max_directions:
        return np.eye(num_params)
    rand = np.array(jax.random.normal(key, (num_params, max_directions)), np.float64)
    norm = np.linalg.norm(pilot)
    if norm > 0:
        rand[:, 0] = pilot / norm
    q, _ = np.linalg.qr(rand)
    if norm > 0:  # keep the pilot direction's sign
        q[:, 0] *= np.sign(q[:, 0] @ pilot)
    return q.T


def _resolve_estimator(
    system: systems.UnrolledSystem, estimator: Any, hparams: dict[str, Any]
) -> estimators.GradientEstimator:
    """``estimator`` as a built estimator: made from its name, or checked to come without hparams."""
    if isinstance(estimator, str):
        return estimators.make(estimator, system, **hparams)
    if isinstance(estimator, estimators.GradientEstimator):
        if hparams:
            raise ValueError(
                f"hyperparameters {', '.join(sorted(hparams))} were given with an estimator that is "
                "already built; allowed: pass them to pes.make, or pass the estimator's name here"
            )
        return estimator
    raise ValueError(
        f"estimator={estimator!r} is invalid; allowed: a name ({', '.join(sorted(estimators.REGISTRY))}) "
        "or a pes.estimators.GradientEstimator"
    )


def _test_basis(
    ref_sample: Callable, num_params: int, max_directions: int, pilot_key: jax.Array, dir_key: jax.Array
) -> np.ndarray:
    """The directions tested: coordinates, or a pilot estimate of the reference plus random ones."""
    if num_params > max_directions:
        pilot = variance.repeat(lambda k: ravel_pytree(ref_sample(k))[0], pilot_key, PILOT_SAMPLES)
        pilot = np.asarray(pilot, np.float64).mean(axis=0)
    else:
        pilot = np.zeros(num_params)
    return _directions(num_params, max_directions, pilot, dir_key)


def _bias_statistics(
    ests: np.ndarray, refs: np.ndarray, basis: np.ndarray, *, alpha: float, rtol: float
) -> dict[str, Any]:
    """The t tests of estimate − reference along ``basis``: the statistical fields of the report."""
    diffs = ests - refs
    ref_norm = float(np.linalg.norm(refs.mean(axis=0)))
    _, stderr, t, threshold = zero_mean_test(diffs @ basis.T, alpha=alpha, atol=rtol * ref_norm)
    noise2 = float(np.sum(diffs.var(axis=0, ddof=1)) / ests.shape[0])
    scale = ref_norm if ref_norm > 0 else float("nan")
    return dict(
        consistent=bool(np.all(np.abs(t) <= threshold)),
        estimate=ests.mean(axis=0) @ basis.T,
        target=refs.mean(axis=0) @ basis.T,
        stderr=stderr,
        t=t,
        threshold=threshold,
        relative_bias=float(np.linalg.norm(diffs.mean(axis=0))) / scale,
        relative_noise=math.sqrt(noise2) / scale,
    )


def check_unbiased(
    system: systems.UnrolledSystem,
    estimator: str | estimators.GradientEstimator,
    theta: PyTree,
    key: jax.Array,
    *,
    num_samples: int = 256,
    reference: str = "exact",
    alpha: float = 0.01,
    es_sigma: float | None = None,
    es_particles: int | None = None,
    max_directions: int = 16,
    rtol: float = 1e-4,
    batch_size: int | None = None,
    **hparams: Any,
) -> UnbiasednessCheck:
    """Test whether ``estimator`` is unbiased for the whole-episode gradient of ``system`` at θ.

    Args:
      system: your `pes.systems.UnrolledSystem` (finite horizon T; keep T and θ small enough
        that ``num_samples`` episodes are quick, and, for ``reference="exact"``, that ``jax.grad``
        through T steps is exact and affordable).
      estimator: a registry name (built with ``pes.make(estimator, system, **hparams)``) or a
        `pes.estimators.GradientEstimator` already built for ``system``.
      theta: the outer parameters (a pytree of float arrays) at which to check.
      key: a `jax.random` key; the result is a deterministic function of it.
      num_samples: independent episode sums (at least 8; a few hundred resolve a bias of a few
        per cent of the gradient on small problems).
      reference: ``"exact"`` or ``"es"`` (see the module docstring).
      alpha: the false-alarm rate: a correct estimator is called biased with at most this
        probability.
      es_sigma: σ of the full-episode ES reference (default: the estimator's ``sigma``).
      es_particles: particles of one ES reference draw (default: the estimator's
        ``num_particles``).
      max_directions: θ with more entries is tested along this many fixed directions.
      rtol: differences below ``rtol`` × ‖reference‖ count as float rounding.
      batch_size: samples computed at once (all if None; smaller bounds memory).
      **hparams: the estimator's hyperparameters when ``estimator`` is a name.

    Returns:
      An `UnbiasednessCheck`; ``print(result)`` says "consistent" or "biased by …".
    """
    _check_inputs(system, reference, alpha, num_samples, max_directions, rtol)
    est = _resolve_estimator(system, estimator, hparams)
    if reference == "es":
        es_sigma = est.hparams.get("sigma") if es_sigma is None else es_sigma
        es_particles = est.hparams.get("num_particles") if es_particles is None else es_particles
    sample, episodes = episode_estimate(est, system, theta)
    ref_sample = reference_sample(
        system,
        theta,
        reference=reference,
        trunc_len=est.steps_per_estimate,
        es_sigma=es_sigma,
        es_particles=es_particles,
    )

    def pair(k):
        k_est, k_ref = jax.random.split(k)
        return ravel_pytree(sample(k_est))[0], ravel_pytree(ref_sample(k_ref))[0]

    pilot_key, dir_key, sample_key = jax.random.split(key, 3)
    num_params = variance.num_params(theta)
    basis = _test_basis(ref_sample, num_params, max_directions, pilot_key, dir_key)

    ests, refs = jax.jit(lambda k: variance.repeat(pair, k, num_samples, batch_size))(sample_key)
    ests, refs = np.asarray(ests, np.float64), np.asarray(refs, np.float64)
    return UnbiasednessCheck(
        estimator=est.name,
        reference=reference,
        alpha=float(alpha),
        num_samples=num_samples,
        episodes_per_sample=episodes,
        directions="coordinates" if num_params <= max_directions else "projections",
        **_bias_statistics(ests, refs, basis, alpha=alpha, rtol=rtol),
    )


__all__ = [
    "REFERENCES",
    "UnbiasednessCheck",
    "check_unbiased",
    "episode_estimate",
    "reference_sample",
    "t_quantile",
    "zero_mean_test",
]
