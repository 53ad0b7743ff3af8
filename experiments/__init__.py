"""Experiment drivers: configs in, runs and CSV logs out (the only layer that knows Hydra)."""
