"""Test session settings: CPU, float64 available, strict rank promotion (equinox-style)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

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


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "numerics: floating-point equivalences and tolerances; `make test-portable` reruns them "
        "with XLA restricted to other CPU instruction sets",
    )
