"""Datasets: the one place in ``pes`` that reads files (each dataset is its own module)."""
