"""Particles sharded across devices with `jax.sharding` (one host or many).

The ES estimators (`pes`, `es`) accept ``devices=None | "auto" | N``.  With more than one
device their noise groups (antithetic pairs) are split over a one-axis mesh named
``"particles"``: every per-group array (perturbations, perturbed thetas, inner states,
step counters, PES accumulators) carries ``NamedSharding(mesh, P("particles"))`` and
theta stays replicated.  Inside the compiled estimate each device unrolls only its own
groups; the gradient, a sum over groups, becomes a local partial sum followed by one
theta-sized all-reduce (plus a scalar one for the logged loss).  That is the only
cross-device traffic per truncation; `collectives` reads it off compiled HLO so tests
can check it.

Noise stays identical to the one-device estimate for the same key: with
``jax_threefry_partitionable`` (JAX's default) each device generates exactly its slice of
the global Gaussian draw, so no device generates another's noise.

Multi-host: call ``jax.distributed.initialize()`` in every process before building the
estimator; ``devices="auto"`` then spans every device of every host (``jax.devices()``).
"""

from __future__ import annotations

import re
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

PyTree = Any
AXIS = "particles"
"""The mesh axis the particle groups are split over."""


def resolve_devices(name: str, devices: int | str | None) -> list | None:
    """The devices an estimator named ``name`` shards over, or None for no sharding.

    ``devices``: None or 1 (no sharding), ``"auto"`` (every device JAX sees, across all
    hosts after ``jax.distributed.initialize``) or an integer N (the first N devices).
    """
    available = jax.devices()
    if devices is None:
        return None
    if isinstance(devices, str) and devices == "auto":
        chosen = available
    elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise ValueError(
                f"estimator '{name}': devices={devices} is invalid; allowed: 'auto', null or an "
                f"integer from 1 to {len(available)} (the devices JAX sees)"
            )
        chosen = available[: int(devices)]
    else:
        raise ValueError(
            f"estimator '{name}': devices={devices!r} is invalid; allowed: 'auto', null or an "
            f"integer from 1 to {len(available)}"
        )
    return chosen if len(chosen) > 1 else None


class ParticleSharding:
    """Shardings of per-group arrays over a one-axis ``particles`` mesh (or none).

    ``ParticleSharding(None)`` is the no-op used on one device, so the estimators can
    call ``constrain`` unconditionally.
    """

    def __init__(self, devices: list | None):
        self.mesh = None if devices is None else Mesh(np.array(devices), (AXIS,))

    @property
    def num_devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.size

    def spec(self, axis: int = 0) -> PartitionSpec:
        """The partition spec that splits dimension ``axis`` over the particle mesh."""
        return PartitionSpec(*([None] * axis), AXIS)

    def groups(self, tree: PyTree, axis: int = 0) -> PyTree:
        """Constrain every leaf's ``axis`` (the group axis) to be split over the mesh."""
        if self.mesh is None:
            return tree
        sharding = NamedSharding(self.mesh, self.spec(axis))
        return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)

    def replicated(self, tree: PyTree) -> PyTree:
        """Constrain every leaf to be replicated on all devices of the mesh."""
        if self.mesh is None:
            return tree
        sharding = NamedSharding(self.mesh, PartitionSpec())
        return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)


_COLLECTIVE = re.compile(
    r"^\s*(?:ROOT\s+)?%?\S+\s*=\s*(.*?)\s+"
    r"(all-reduce|all-gather|all-to-all|collective-permute|reduce-scatter)(?:-start)?\(",
    re.M,
)


def collectives(hlo_text: str) -> list[tuple[str, str]]:
    """(op, result shape) of every cross-device collective in compiled HLO text.

    Use ``jax.jit(f).lower(*args).compile().as_text()``.  Async pairs are counted once
    (by their ``-start`` op).
    """
    return [(op, shape) for shape, op in _COLLECTIVE.findall(hlo_text)]


def shape_size(shape: str) -> int:
    """Number of elements of an HLO result shape such as ``f64[1000]`` or a tuple of them."""
    total = 0
    for dims in re.findall(r"[a-z]+\d*\[([\d,]*)\]", shape):
        total += int(np.prod([int(d) for d in dims.split(",") if d])) if dims else 1
    return total
