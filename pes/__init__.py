"""pes: unbiased and truncated gradient estimators for unrolled computation graphs.

Pure JAX: no configuration system, no printing, no file I/O (only `pes.data` reads files).
"""

from pes import estimators, horizons, outer, results, systems, tasks
from pes.estimators import REGISTRY, GradientEstimator, make
from pes.systems import UnrolledSystem

__version__ = "0.1.0"

__all__ = [
    "REGISTRY",
    "GradientEstimator",
    "UnrolledSystem",
    "estimators",
    "horizons",
    "make",
    "outer",
    "results",
    "systems",
    "tasks",
]
