"""Test session settings: CPU, float64 available, strict rank promotion (equinox-style), and
one XLA compilation cache shared by the session's processes.

Most of the suite's time is XLA compiling small programs, and many tests compile the same
program again (a fixture's config in another test, a CLI subprocess repeating an in-process
run, the other pytest-xdist worker).  The session therefore points JAX's persistent
compilation cache at a fresh temporary folder (inherited by the xdist workers and by every
subprocess a test starts) and deletes it at the end: each session starts cold, so no result
depends on an earlier session.  A ``JAX_COMPILATION_CACHE_DIR`` set by the user is kept.
"""

import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
_SESSION_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the first process of the session
    _SESSION_CACHE = tempfile.mkdtemp(prefix="pes-tests-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _SESSION_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)
# (N,) * (N, d) broadcasting mistakes are the classic ES bug: make them errors.
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(autouse=True)
def _x64_on():
    """Runs built by the experiment layer may switch x64 off; restore it for every test."""
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", True)


def pytest_unconfigure(config):
    if _SESSION_CACHE is not None:
        shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "numerics: floating-point equivalences and tolerances; `make test-portable` reruns them "
        "with XLA restricted to other CPU instruction sets",
    )
    config.addinivalue_line(
        "markers",
        "integration: whole figures, launched jobs, emulated multi-device runs and task-scale models: "
        "minutes each; `make test-integration` runs them (and .ci/run, after `make test`)",
    )
    config.addinivalue_line(
        "markers",
        "data: needs a real dataset and skips, naming it, where it is missing; `make test-data` runs "
        "these alone (.ci/run: after `make test` with every dataset hidden)",
    )
