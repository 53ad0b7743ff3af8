"""Optional dependencies, imported where they are needed.

The core install (``pip install pes-repro``) is JAX, optax and NumPy.  A module that needs more
imports it through `require`, which turns a missing package into one line naming the extra to
install, e.g. ``pes.lopt needs flax, which is not installed: pip install 'pes-repro[suite]'``.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, *, extra: str, by: str) -> ModuleType:
    """Import ``module`` or raise a one-line `ModuleNotFoundError` naming ``extra``.

    Args:
      module: the module to import (``"flax.linen"``).
      extra: the ``pes-repro`` extra that installs it (``"suite"``).
      by: who needs it, for the message (``"pes.lopt"``, ``"task 'swimmer'"``).

    Returns:
      The imported module.  A package that is installed but fails to import for another reason
      (a missing dependency of its own, a broken install) raises its own error unchanged.
    """
    top = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is None or err.name.split(".")[0] != top:
            raise
        raise ModuleNotFoundError(
            f"{by} needs {top}, which is not installed: pip install 'pes-repro[{extra}]'", name=top
        ) from None
