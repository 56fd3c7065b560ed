"""Pure-math metrics: accuracy counts, frame diagnostics, class-separation statistics.

Functions of tensors returning plain Python numbers; no model, optimizer or tracker.
"""

from sepconc.metrics.accuracy import topk_correct
from sepconc.metrics.class_stats import class_statistics, class_statistics_by_layer
from sepconc.metrics.diagnostics import (
    frame_diagnostics,
    projection_diagnostics,
    target_atom_norm,
)
from sepconc.metrics.separation import FISHER_KEY, separation_statistics

__all__ = [
    "FISHER_KEY",
    "class_statistics",
    "class_statistics_by_layer",
    "frame_diagnostics",
    "projection_diagnostics",
    "separation_statistics",
    "target_atom_norm",
    "topk_correct",
]
