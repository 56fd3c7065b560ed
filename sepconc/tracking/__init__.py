"""Tracking: the MLflow store (one per runs folder), run logging for `train` and sweeps, the server."""
