"""pes: unbiased and truncated gradient estimators for unrolled computation graphs.

Pure JAX: no configuration system, no printing, no file I/O (only `pes.data` reads files).
The core install is JAX, optax and NumPy; `pes.results` (pandas) and `pes.lopt` (flax) need the
``suite`` extra and are imported on first use, with a one-line error naming the extra when it
is missing.

Start with `UnrolledSystem` (your problem), `make` (an estimator), `outer.run` (the outer loop)
and `check_unbiased` (is this estimator unbiased on your problem?); docs/guide.md walks through
them.
"""

from __future__ import annotations

import importlib

from pes import diagnostics, estimators, horizons, outer, systems, tasks, variance
from pes._version import __version__ as __version__
from pes.diagnostics import UnbiasednessCheck, check_unbiased
from pes.estimators import GradientEstimator, make
from pes.systems import UnrolledSystem

REGISTRY = estimators.REGISTRY
"""Every estimator by name (`pes.estimators.REGISTRY`): ``pes.make(name, system, **hparams)`` builds one."""

# Submodules that are imported on first access (``pes.results``), not by ``import pes``:
# some need an extra, and the others are not needed to estimate gradients.
_LAZY_SUBMODULES = ("data", "grid", "hyperopt", "lopt", "results", "search", "sharding")


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"pes.{name}")
    raise AttributeError(f"module 'pes' has no attribute {name!r}")


__all__ = [
    "REGISTRY",
    "GradientEstimator",
    "UnbiasednessCheck",
    "UnrolledSystem",
    "check_unbiased",
    "diagnostics",
    "estimators",
    "horizons",
    "make",
    "outer",
    "systems",
    "tasks",
    "variance",
]
