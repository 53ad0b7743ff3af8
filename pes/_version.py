"""The package version: the single source (read by pyproject.toml and `pes.__version__`)."""

__version__ = "0.1.0"
