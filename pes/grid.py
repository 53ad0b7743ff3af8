"""Grid search over a low-dimensional theta: a vectorised, chunked evaluation.

``evaluate_points(fn, points, chunk_size)`` evaluates a scalar function of theta at many
points with ``vmap`` inside chunks and ``lax.map`` over the chunks, so memory stays
bounded by one chunk and nothing loops in Python per point.  ``grid_points`` builds a
regular (meshgrid, ``indexing="ij"``) grid; ``grid_search`` combines both and reports the
minimum.  Pure JAX: progress bars and files are the experiment layer's job
(the ``grid`` post-step, experiments/steps/grid.py), which calls ``evaluate_points`` block
by block.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def _as_list(value, dim: int | None, name: str) -> list[float]:
    if np.ndim(value) == 0:
        if dim is None:
            raise ValueError(f"{name}={value!r} is a scalar; give one value per dimension")
        return [float(value)] * dim
    return [float(v) for v in value]


def grid_axes(low: Sequence[float], high: Sequence[float], num: int | Sequence[int]) -> list[np.ndarray]:
    """The per-dimension coordinates of a regular grid (endpoints included).

    ``num`` is the number of points per dimension (an int for all dimensions, or one per
    dimension).  Raises ``ValueError`` on a grid with zero points, mismatched lengths or
    ``low >= high``.
    """
    low = _as_list(low, None, "low")
    dim = len(low)
    high = _as_list(high, dim, "high")
    nums = [num] * dim if np.ndim(num) == 0 else list(num)
    if dim == 0:
        raise ValueError("low=[] gives a grid with zero dimensions; allowed: one bound per theta entry")
    if len(high) != dim or len(nums) != dim:
        raise ValueError(
            f"grid bounds and sizes disagree: low has {dim} entries, high {len(high)}, num {len(nums)}"
        )
    for i, n in enumerate(nums):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"grid num[{i}]={n!r} gives a grid with zero points; allowed: an integer >= 1")
    for i, (lo, hi) in enumerate(zip(low, high, strict=True)):
        if not (np.isfinite(lo) and np.isfinite(hi)) or (lo >= hi and nums[i] > 1):
            raise ValueError(
                f"grid range [{lo}, {hi}] of dimension {i} is invalid; allowed: finite low < high"
            )
    return [np.linspace(lo, hi, int(n)) for lo, hi, n in zip(low, high, nums, strict=True)]


def grid_points(axes: Sequence[np.ndarray]) -> np.ndarray:
    """All points of the grid spanned by ``axes``, shape (prod(len(axes)), dim), C order.

    Point ``i`` has the coordinates of ``np.unravel_index(i, shape)`` (``indexing="ij"``):
    the last dimension varies fastest.
    """
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=-1)


def evaluate_points(
    fn: Callable[[jax.Array], jax.Array], points: jax.Array, chunk_size: int = 4096
) -> jax.Array:
    """``fn`` at every row of ``points`` (shape (P, dim)); returns shape (P,).

    ``vmap`` within chunks of ``chunk_size`` points, ``lax.map`` over chunks; the last
    chunk is padded with copies of the first point and the padding is dropped.  Jittable
    (``chunk_size`` static).
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r} is invalid; allowed: an integer >= 1")
    points = jnp.asarray(points)
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(f"points has shape {points.shape}; allowed: (P, dim) with P >= 1")
    num = points.shape[0]
    chunk = min(chunk_size, num)
    num_chunks = -(-num // chunk)
    pad = num_chunks * chunk - num
    if pad:
        points = jnp.concatenate([points, jnp.broadcast_to(points[:1], (pad, points.shape[1]))])
    values = jax.lax.map(jax.vmap(fn), points.reshape(num_chunks, chunk, points.shape[1]))
    return values.reshape(-1)[:num]


class GridResult(NamedTuple):
    """A grid search: the axes, the values on the grid, and the minimum and where it lies."""

    axes: list[np.ndarray]  # coordinates per dimension
    values: np.ndarray  # shape (len(axes[0]), len(axes[1]), ...), indexing "ij"
    argmin: np.ndarray  # theta at the minimum (NaN values ignored)
    min: float


def summarize(axes: Sequence[np.ndarray], values: np.ndarray) -> GridResult:
    """Reshape flat values to the grid and locate the minimum (ignoring NaN)."""
    shape = tuple(len(a) for a in axes)
    values = np.asarray(values).reshape(shape)
    if np.all(np.isnan(values)):
        raise ValueError("every grid value is NaN; there is no minimum")
    idx = np.unravel_index(int(np.nanargmin(values)), shape)
    argmin = np.array([a[i] for a, i in zip(axes, idx, strict=True)])
    return GridResult(list(axes), values, argmin, float(values[idx]))


def grid_search(
    fn: Callable[[jax.Array], jax.Array],
    low: Sequence[float],
    high: Sequence[float],
    num: int | Sequence[int],
    chunk_size: int = 4096,
) -> GridResult:
    """Evaluate ``fn`` on a regular grid over [low, high] and return values and minimum."""
    axes = grid_axes(low, high, num)
    points = grid_points(axes)
    values = jax.jit(evaluate_points, static_argnums=(0, 2))(fn, points, chunk_size)
    return summarize(axes, np.asarray(values))
