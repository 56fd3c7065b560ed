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

__all__ = [
    "class_statistics",
    "class_statistics_by_layer",
    "frame_diagnostics",
    "projection_diagnostics",
    "target_atom_norm",
    "topk_correct",
]
